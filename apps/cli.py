"""`rewardflow` command line: train, setup, submit, rewards list, train-rm, sft, serve-reward, report."""
from __future__ import annotations

import argparse
import os
import sys

from cluster.recipe import ConfigError, load_recipe


def _print_summary(summary: dict) -> None:
    t = summary["mean_step_timing_s"]
    phases = ", ".join(f"{k.split('/')[1]} {v:.1f}s" for k, v in t.items())
    print(
        f"\nrewardflow: {summary['steps']} steps in {summary['wall_s']:.0f}s "
        f"({summary['samples_per_s']:.2f} samples/s); eval accuracy "
        f"{summary['eval_accuracy_before']:.3f} -> {summary['eval_accuracy_after']:.3f}\n"
        f"  mean step: {phases}\n  summary: {summary['summary_path']}"
        + (f"\n  final policy: {summary['final_checkpoint']}" if summary.get("final_checkpoint") else "")
    )


def cmd_train(args) -> int:
    cfg = load_recipe(args.recipe, [*args.overrides, *(["logging.verbose=true"] if args.verbose else [])])
    from cluster.console import RunFailed
    from cluster.launch import train

    try:
        summary = train(cfg)
    except RunFailed as e:  # its traceback is in the run's logs/driver.log
        print(f"rewardflow: error: {e}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 0


def cmd_setup(args) -> int:
    from core.models import ensure_default_model

    print(ensure_default_model())
    return 0


def cmd_submit(args) -> int:
    """Validate locally, then run the recipe as a Ray job and follow its logs; or follow, query
    or stop a submitted job (apps/submit.py)."""
    from apps import submit

    address = args.address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    for action, job_id in (("follow", args.follow), ("status", args.status), ("stop", args.stop)):
        if job_id is not None:
            if args.recipe is not None:
                raise ConfigError(f"submit --{action} takes a job id, not a recipe")
            return getattr(submit, action)(address, job_id)
    if args.recipe is None:
        raise ConfigError("submit needs a recipe (or --follow / --status / --stop JOB_ID)")
    cfg = load_recipe(args.recipe, args.overrides)
    job_id = submit.submit(args.recipe, args.overrides, address, cfg.train.output_dir)
    print(f"rewardflow: submitted {job_id} to {address}", flush=True)
    return 0 if args.no_wait else submit.follow(address, job_id)


def cmd_serve_reward(args) -> int:
    """Serve one registered reward over HTTP until interrupted (apps/reward_server.py)."""
    from apps.reward_server import serve_from_cli

    return serve_from_cli(args.target, args.overrides, args.host, args.port, args.token, args.token_file,
                          args.no_auth)


def cmd_train_rm(args) -> int:
    """Train a Bradley-Terry reward model from preference pairs (apps/train_rm.py)."""
    from apps.train_rm import load_rm_config, train_rm

    summary = train_rm(load_rm_config(args.recipe, args.overrides))
    print(f"\nrewardflow train-rm: held-out pairwise accuracy {summary['eval_accuracy_before']:.3f} -> "
          f"{summary['eval_accuracy_after']:.3f} ({summary['eval_pairs']} pairs) in {summary['wall_s']:.0f}s\n"
          f"  reward model: {summary['checkpoint']}\n  summary: {summary['summary_path']}")
    return 0


def cmd_sft(args) -> int:
    """Supervised fine-tuning of the policy on DeepSpeed (apps/sft.py)."""
    from apps.sft import load_sft_config, run_sft

    summary = run_sft(load_sft_config(args.recipe, args.overrides))
    losses = summary["train_loss"]
    held_out = (f"; held-out loss {summary['eval_loss_before']:.4f} -> {summary['eval_loss_after']:.4f}"
                if summary["eval_loss_before"] is not None else "")
    print(f"\nrewardflow sft: {summary['steps']} steps, train loss {losses[0]:.4f} -> {losses[-1]:.4f}{held_out} "
          f"in {summary['wall_s']:.0f}s\n  policy: {summary['checkpoint']}\n  summary: {summary['summary_path']}")
    return 0


def cmd_rewards_list(args) -> int:
    """The reward registry with each reward's four taxonomy tags (rewards/catalog.py)."""
    from rewards.catalog import reward_table

    print(reward_table(markdown=args.markdown))
    return 0


def cmd_report(args) -> int:
    """One HTML page with the run's plots and sample generations (apps/report.py)."""
    from apps.report import write_report

    print(f"rewardflow report: {write_report(args.run_dir, args.out)}")
    return 0


def cmd_scale(args) -> int:
    """Ask a running job to resize a role (apps/scale.py)."""
    from apps.scale import request_scale

    path = request_scale(args.run_dir, args.role, args.workers)
    print(f"rewardflow scale: {args.role} -> {args.workers} workers, requested in {path} "
          "(the run applies it at its next step)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewardflow", description="Distributed RLHF on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run a recipe (local Ray cluster unless RAY_ADDRESS / cluster.address)")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. algo.lr=1e-6")
    t.add_argument("--verbose", action="store_true",
                   help="show the actors' and Ray's output on the console too (logging.verbose=true); "
                        "it always goes to OUTPUT_DIR/logs/")
    t.set_defaults(fn=cmd_train)
    s = sub.add_parser("setup", help="build the embedded default model in the cache")
    s.set_defaults(fn=cmd_setup)
    j = sub.add_parser("submit", help="run a recipe as a Ray job and follow it; or follow, query or stop a job")
    j.add_argument("recipe", nargs="?")
    j.add_argument("overrides", nargs="*")
    j.add_argument("--address", help="Ray dashboard address (default: RAY_ADDRESS or http://127.0.0.1:8265)")
    j.add_argument("--no-wait", action="store_true", help="print the job id and return")
    for action in ("follow", "status", "stop"):
        j.add_argument(f"--{action}", metavar="JOB_ID", help=f"{action} a submitted job")
    j.set_defaults(fn=cmd_submit)
    rw = sub.add_parser("rewards", help="inspect the reward registry")
    rw = rw.add_subparsers(dest="rewards_command", metavar="{list}", required=True)
    rl = rw.add_parser("list", help="registered rewards with their taxonomy: basis, format, expression, granularity")
    rl.add_argument("--markdown", action="store_true", help="a Markdown table (as in docs/rewards.md)")
    rl.set_defaults(fn=cmd_rewards_list)
    m = sub.add_parser("train-rm", help="train a Bradley-Terry reward model from preference pairs")
    m.add_argument("recipe")
    m.add_argument("overrides", nargs="*", help="dotted overrides, e.g. lr=1e-5 data.train_path=prefs.jsonl")
    m.set_defaults(fn=cmd_train_rm)
    f = sub.add_parser("sft", help="supervised fine-tuning of the policy (files, IFT, EFT judge examples)")
    f.add_argument("recipe")
    f.add_argument("overrides", nargs="*", help="dotted overrides, e.g. steps=50 data.sources.0.path=chat.jsonl")
    f.set_defaults(fn=cmd_sft)
    r = sub.add_parser("serve-reward", help="serve one registered reward over HTTP (bearer token, 127.0.0.1 by default)")
    r.add_argument("target", help="a registered reward name, or a YAML file of reward-server settings")
    r.add_argument("overrides", nargs="*", help="key=value settings, e.g. args.extract=math_verify max_batch=64")
    r.add_argument("--host", help="bind address (default 127.0.0.1)")
    r.add_argument("--port", type=int, help="port (default 8765)")
    r.add_argument("--token-file", metavar="PATH",
                   help="file holding the bearer token, readable by its owner only (default: $REWARDFLOW_REWARD_TOKEN)")
    r.add_argument("--token", help="bearer token (visible in the process list: prefer --token-file)")
    r.add_argument("--no-auth", action="store_true", help="serve without a token (loopback hosts only)")
    r.set_defaults(fn=cmd_serve_reward)
    o = sub.add_parser("report", help="plots and samples of a train run as one self-contained HTML page")
    o.add_argument("run_dir", help="the run's train.output_dir (holds metrics.jsonl)")
    o.add_argument("--out", metavar="DIR", help="where to write report.html and the PNGs (default RUN_DIR/report)")
    o.set_defaults(fn=cmd_report)
    c = sub.add_parser("scale", help="add or remove rollout (or reward) actors of a running job")
    c.add_argument("run_dir", help="the running job's train.output_dir")
    c.add_argument("--role", default="rollout", help="rollout (default) or reward")
    c.add_argument("--workers", type=int, required=True, help="the role's new number of actors")
    c.set_defaults(fn=cmd_scale)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`submit r.yaml --address X algo.lr=1e-6`); argparse leaves
    # such trailing key=value words unparsed.
    args, extra = parser.parse_known_args(argv)
    stray = [w for w in extra if "=" not in w or w.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"rewardflow: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        if e.errno is not None and e.filename is None:  # the OS's, naming no input file: keep its traceback
            raise
        print(f"rewardflow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
