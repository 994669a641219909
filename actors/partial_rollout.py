"""Partial rollouts: what a rollout actor keeps of a response when a weight load interrupts it.

With `rollout.interrupt`, a weight load that arrives while the engine generates stops it at the
next engine step: the unfinished requests are aborted, each keeping the tokens it has sampled with
their logprobs and the policy version that sampled them. After the load, each continues as a new
request whose prompt is the original prompt plus its kept tokens, for what is left of its token
budget, under the new weights (partial rollouts, as in AReaL, slime and OpenRLHF). The learner's
importance correction uses each token's own behaviour logprob, so a response sampled by two
versions needs nothing more than the concatenation kept here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.protocol import Prompts, Rollouts


@dataclass
class PartialSample:
    """One response in generation: the prompt it answers and what has been sampled so far."""

    prompt_ids: np.ndarray  # [P], the original prompt
    group: int  # index of the prompt in its batch
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # the policy version of each token
    text: str = ""  # as the engine detokenised it, request by request
    finish_reason: str | None = None
    end_version: int | None = None  # the policy version in use when the response finished
    requests: int = 0  # engine requests made for it: more than one after an interruption

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def extend(self, token_ids, logprobs, version: int, text: str = "") -> None:
        """Append newly sampled tokens, their logprobs and the version that sampled them."""
        if len(token_ids) != len(logprobs):
            raise ValueError(f"{len(token_ids)} tokens but {len(logprobs)} logprobs")
        self.token_ids += [int(t) for t in token_ids]
        self.logprobs += [float(lp) for lp in logprobs]
        self.versions += [version] * len(token_ids)
        self.text += text

    def finish(self, reason: str, version: int) -> None:
        self.finish_reason, self.end_version = reason, version

    def next_request(self, max_new_tokens: int) -> tuple[list[int], int]:
        """The request that goes on from here: prompt + kept tokens, and the tokens left to sample."""
        self.requests += 1
        return [*np.asarray(self.prompt_ids).tolist(), *self.token_ids], max_new_tokens - len(self.token_ids)


def rollouts_from_samples(samples: list[PartialSample], prompts: Prompts,
                          decode: Callable[[list[int]], str]) -> Rollouts:
    """Finished samples as `Rollouts` rows, in order. A row's `policy_versions` entry is the version
    of its oldest token (that of its end for a response without tokens), so the staleness bound
    holds for every token; `token_versions` has each token's own. The text of a response made by
    several requests is `decode(token_ids)`: a character cut at the interruption (bytes held back
    by the first request's detokeniser) is in neither request's text."""
    if any(not s.finished for s in samples):
        raise ValueError("rollouts_from_samples: a sample is not finished")
    return Rollouts(
        prompt_ids=[prompts.token_ids[s.group] for s in samples],
        response_ids=[np.asarray(s.token_ids, dtype=np.int64) for s in samples],
        rollout_logprobs=[np.asarray(s.logprobs, dtype=np.float32) for s in samples],
        response_texts=[decode(s.token_ids) if s.requests > 1 else s.text for s in samples],
        finish_reasons=[s.finish_reason for s in samples],
        group_ids=np.asarray([s.group for s in samples], dtype=np.int64),
        policy_versions=np.asarray([min(s.versions, default=s.end_version) for s in samples], dtype=np.int64),
        prompt_texts=[prompts.texts[s.group] for s in samples],
        answers=[prompts.answers[s.group] for s in samples],
        token_versions=[np.asarray(s.versions, dtype=np.int64) for s in samples],
    )
