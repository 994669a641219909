"""Benchmark: the rollout actor against bare vLLM on one GRPO batch, and both against its floor.

    RAY_TMPDIR=/tmp/ray_speed .venv/bin/python bench/rollout_speed.py [--repeats 5] [overrides...]

The batch is one step of recipes/bench_trl_config.yaml (overrides apply): its first
`train.prompts_per_step` train prompts (8 arithmetic questions), `algo.group_size` samples each
(8), at most `rollout.max_new_tokens` (48) new tokens, temperature `rollout.temperature` (1).
On one local Ray cluster, every engine in an actor process of its own (in-process engine, the
rollout role's KV-cache size), one call at a time, the ways interleaved in every repeat after
one warm-up round:

  rollout actor                  `RolloutGroup.generate`, what training runs: one engine request
                                 per sample, sampled-token logprobs, outputs streamed per step
  bare vLLM, same engine, n=G    `LLM.generate(prompts, SamplingParams(n=G))`, no logprobs, on an
                                 engine with the rollout actor's settings (block size, prefix
                                 caching, eager, chunked prefill, batch limits, read from its
                                 engine) in the rollout worker environment (its LD_PRELOAD)
  bare vLLM, same engine, B req. the same engine, one request per sample
  ... but no preload, n=G        the same settings, in the worker environment less the preloads
                                 of `cluster.placement.vllm_cpu_env` (Intel OpenMP, tcmalloc)
  ... but block 128, n=G         the same, with vLLM's CPU default KV block of 128 tokens

Each call is timed on the driver (Ray round trip included); tokens/s = response tokens / seconds.
The floor of a call is its FLOPs (core/flops.py: 2 FLOPs per parameter per position, each prompt
once per group) over the peak (`core.flops.matmul_peak`: fp32 matmuls, one thread's best times
the worker's threads) measured in a task with the rollout worker environment before every round,
the highest reading taken. Prints a Markdown section (medians over
repeats) for docs/benchmarks.md; the readings go to `--out`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpo_default import machine  # noqa: E402

RECIPE = "recipes/bench_trl_config.yaml"


# The engine settings the rollout actor chose that the bare engine copies ("same engine").
ENGINE_SETTINGS = {"block_size": "cache_config", "enable_prefix_caching": "cache_config",
                   "enforce_eager": "model_config", "logprobs_mode": "model_config",
                   "enable_chunked_prefill": "scheduler_config", "max_num_seqs": "scheduler_config",
                   "max_num_batched_tokens": "scheduler_config"}


def engine_settings(actor) -> dict:
    """`ENGINE_SETTINGS` as the rollout actor's engine runs them (read from its vLLM config)."""
    import ray

    def read(self):
        config = self.llm.llm_engine.vllm_config
        return {k: getattr(getattr(config, part), k) for k, part in ENGINE_SETTINGS.items()}

    return ray.get(actor.__ray_call__.remote(read))


class BareEngine:
    """vLLM's `LLM` in an actor's own process, like the rollout actor's engine: vLLM's default
    engine arguments (model, dtype, context, seed given) updated with `settings`."""

    def __init__(self, model_path: str, max_model_len: int, kv_cache_gib: float, seed: int, dtype: str,
                 settings: dict):
        from core.models import configure_vllm_env

        configure_vllm_env(kv_cache_gib)
        from vllm import LLM

        self.llm = LLM(model=model_path, dtype=dtype, max_model_len=max_model_len, seed=seed, **settings)

    def generate(self, prompt_ids: list[list[int]], n: int, max_tokens: int, temperature: float,
                 one_request_per_sample: bool) -> int:
        """Response tokens sampled for `n` samples of every prompt."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        if one_request_per_sample:
            prompts, n = [p for p in prompts for _ in range(n)], 1
        params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature)
        out = self.llm.generate(prompts, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in out for c in o.outputs)

    def preloaded(self) -> list[str]:
        return preloaded_libs()


def preloaded_libs() -> list[str]:
    """The OpenMP runtimes and allocators mapped into this process (checks that a preload took)."""
    maps = Path("/proc/self/maps").read_text()
    return sorted({line.split()[-1].rsplit("/", 1)[-1] for line in maps.splitlines()
                   if any(k in line for k in ("libiomp", "libgomp", "libtcmalloc", "libjemalloc"))})


def build(cfg, model_path: str):
    """The recipe's rollout group; beside it, bare engines with the rollout actor's engine
    settings in its worker environment ("same engine"), the same without the preloads of
    `vllm_cpu_env` ("no preload"), and with vLLM's CPU default KV block ("block 128"); a task
    measuring the peak in the worker environment."""
    import ray

    from cluster.groups import RolloutGroup
    from cluster.placement import vllm_cpu_env, worker_env

    rollouts = RolloutGroup.for_recipe(cfg, model_path)
    r = cfg.rollout
    max_len = r.max_prompt_len + max(r.max_new_tokens, cfg.train.eval_max_new_tokens)
    env = worker_env(r)
    plain = {"env_vars": {**{k: v for k, v in env["env_vars"].items() if k not in vllm_cpu_env()}, "LD_PRELOAD": ""}}
    settings = engine_settings(rollouts.actors[0])
    remote = ray.remote(num_cpus=0)(BareEngine)
    args = (model_path, max_len, r.kv_cache_gib, cfg.train.seed, cfg.model.dtype)
    bare = {"same engine": remote.options(runtime_env=env).remote(*args, settings),
            "no preload": remote.options(runtime_env=plain).remote(*args, settings),
            "block 128": remote.options(runtime_env=env).remote(*args, {**settings, "block_size": 128})}
    ray.get([a.preloaded.remote() for a in bare.values()])  # engines up
    peak = ray.remote(num_cpus=0)(measure_peak).options(runtime_env=env)
    return rollouts, bare, peak


def measure_peak() -> float:
    from core.flops import matmul_peak

    return matmul_peak("float32", "cpu")


def run(args, overrides: list[str]) -> dict:
    import ray

    from cluster.placement import start_ray
    from cluster.recipe import load_recipe
    from core.data import load_rows, render_prompts
    from core.flops import phase_flops, step_tokens
    from core.models import load_tokenizer, matmul_params, resolve_model_path
    from core.protocol import SamplingSpec

    cfg = load_recipe(ROOT / args.recipe, overrides)
    model_path = resolve_model_path(cfg.model.path)
    train, _ = load_rows(cfg.task)
    prompts = render_prompts(train[:cfg.train.prompts_per_step], load_tokenizer(model_path), cfg.task)
    ids = [t.tolist() for t in prompts.token_ids]
    g, r = cfg.algo.group_size, cfg.rollout
    spec = SamplingSpec(n=g, max_new_tokens=r.max_new_tokens, temperature=r.temperature)
    body, head = matmul_params(model_path)
    start_ray(cfg, ["rollout"])
    try:
        rollouts, bare, peak_fn = build(cfg, model_path)
        preloaded = {name: ray.get(a.preloaded.remote()) for name, a in bare.items()}
        preloaded["rollout actor"] = ray.get(rollouts.actors[0].__ray_call__.remote(lambda self: preloaded_libs()))
        settings = engine_settings(rollouts.actors[0])

        def bare_call(name: str, separate: bool):
            return lambda: ray.get(bare[name].generate.remote(ids, g, r.max_new_tokens, r.temperature, separate))

        calls = {"rollout actor": lambda: sum(len(x) for x in rollouts.generate(prompts, spec).response_ids),
                 f"bare vLLM, same engine, n={g}": bare_call("same engine", False),
                 f"bare vLLM, same engine, {g * len(ids)} requests": bare_call("same engine", True),
                 f"bare vLLM, same engine but no preload, n={g}": bare_call("no preload", False),
                 f"bare vLLM, same engine but block 128, n={g}": bare_call("block 128", False)}
        readings, peaks = interleave(calls, lambda: ray.get(peak_fn.remote()), args.repeats)
    finally:
        ray.shutdown()
    peak = max(peaks)
    prompt_tokens, _ = step_tokens([len(t) for t in ids], [0] * len(ids), range(len(ids)))
    for rows in readings.values():
        for row in rows:
            row["floor_s"] = phase_flops(body, head, prompt_tokens, row["tokens"], False, False, 1)["generate"] / peak
    return {"recipe": args.recipe, "overrides": overrides, "readings": readings, "peaks": peaks, "peak": peak,
            "prompt_tokens": prompt_tokens, "prompt_lens": [len(t) for t in ids], "samples": g * len(ids),
            "matmul_params": [body, head], "preloaded": preloaded, "settings": settings, "load": load_average()}


def interleave(calls: dict, peak, repeats: int) -> tuple[dict[str, list[dict]], list[float]]:
    """Every call once per round, a peak reading before each round; round 0 is a warm-up."""
    readings: dict[str, list[dict]] = {name: [] for name in calls}
    peaks = []
    for rep in range(repeats + 1):
        peaks.append(peak())
        for name, call in calls.items():
            started = time.perf_counter()
            tokens = call()
            seconds = time.perf_counter() - started
            if rep:
                readings[name].append({"tokens": tokens, "seconds": seconds})
            print(f"round {rep} {name}: {tokens} tokens in {seconds:.2f} s ({tokens / seconds:.1f} tokens/s)", flush=True)
    return readings, peaks


def load_average() -> list[float]:
    import os

    return list(os.getloadavg())


def medians(rows: list[dict]) -> dict[str, float]:
    """Medians over repeats of a way's tokens, seconds, tokens/s and floor seconds / seconds."""
    def median(f):
        return statistics.median(f(row) for row in rows)

    return {"tokens": median(lambda r: r["tokens"]), "seconds": median(lambda r: r["seconds"]),
            "rate": median(lambda r: r["tokens"] / r["seconds"]), "floor_s": median(lambda r: r["floor_s"]),
            "floor_frac": median(lambda r: r["floor_s"] / r["seconds"])}


def report(result: dict, argv: list[str]) -> str:
    med = {name: medians(rows) for name, rows in result["readings"].items()}
    bare = next(name for name in med if name.startswith("bare vLLM, same engine, n="))
    rows = "\n".join(
        f"| {name} | {m['tokens']:.0f} | {m['seconds']:.2f} | {m['rate']:.0f} | {m['rate'] / med[bare]['rate']:.2f}x | "
        f"{m['floor_s']:.2f} | {100 * m['floor_frac']:.0f}% |" for name, m in med.items())
    n = len(next(iter(result["readings"].values())))
    return f"""
## Rollout actor vs bare vLLM, one GRPO batch ({datetime.date.today().isoformat()})

- command: `{' '.join(['python bench/rollout_speed.py', *argv])}`
- machine: {machine()}; load average at the end {', '.join(f'{x:.1f}' for x in result['load'])}
- batch: `{result['recipe']}`, {len(result['prompt_lens'])} prompts ({min(result['prompt_lens'])}-{max(result['prompt_lens'])} tokens) x {result['samples'] // len(result['prompt_lens'])} samples, median of {n} interleaved repeats
- floor: 2·N FLOPs per position (N = {result['matmul_params'][0] / 1e6:.1f}M body + {result['matmul_params'][1] / 1e6:.1f}M head, the head on response positions only), each prompt once per group ({result['prompt_tokens']} tokens), at the measured fp32 matmul peak {result['peak'] / 1e9:.0f} GFLOP/s
- preloaded (from /proc/self/maps): {result['preloaded']}; same engine: {result['settings']}

| way | response tokens | s | tokens/s | vs bare, same engine, n={result['samples'] // len(result['prompt_lens'])} | floor s | fraction of floor |
|---|---|---|---|---|---|---|
{rows}
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--recipe", default=RECIPE)
    p.add_argument("--out", default="runs/bench_rollout_speed.json")
    args, overrides = p.parse_known_args()
    result = run(args, overrides)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(report(result, sys.argv[1:]))


if __name__ == "__main__":
    main()
