"""`rewardflow scale RUN_DIR --role rollout --workers N`: resize a role of a running job.

The run's driver polls `<train.output_dir>/control/scale.json` at every step (cluster/controller.py
`poll_scale`): added actors get the current weights first, removed ones finish their requests.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from cluster.controller import SCALABLE_ROLES, SCALE_FILE, read_scale_request
from core.config import ConfigError


def request_scale(run_dir: str, role: str, workers: int) -> Path:
    """Record `role: workers` in the run's scale request (other roles' entries are kept); the
    request file, written atomically."""
    run = Path(run_dir)
    if not (run / "metrics.jsonl").is_file() and not (run / "logs").is_dir():
        raise ConfigError(f"{run_dir}: not a run's output directory (no metrics.jsonl or logs/); "
                          "give the run's train.output_dir")
    if role not in SCALABLE_ROLES:
        raise ConfigError(f"--role: {role!r} cannot be scaled (only {', '.join(SCALABLE_ROLES)})")
    if not 1 <= workers <= 1024:
        raise ConfigError(f"--workers: {workers} is outside 1..1024")
    path = run / "control" / SCALE_FILE
    path.parent.mkdir(exist_ok=True)
    try:
        request = read_scale_request(path) if path.exists() else {}
    except ValueError:
        request = {}  # a broken earlier request is replaced
    request[role] = workers
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(request))
    os.replace(tmp, path)
    return path
