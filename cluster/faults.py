"""Surviving faults: an actor of a stateless role that dies is restarted and its requests go out
again; no wait of the loop lasts longer than its phase's deadline.

`ActorPool` holds one role's actors (rollout, reward, reference). Every request goes through it
as a `Ticket` that remembers how to make the call, so a call lost with its actor is made again,
on the least-loaded live actor, once the dead one is replaced (bounded by the role's
`max_restarts`; past it, `RoleFailed`, one line). What an actor must hold before it serves (a
rollout actor's current weights) is the role's `after_restart` hook. The Ray calls themselves
are a `Calls` object, so the property test of the pipeline drives the same pool over simulated
actors that die.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

# Phases of the loop with a deadline each (`train.timeouts`); see `phase_timeouts`.
PHASES = ("generate", "score", "judge", "reference", "critic", "update", "weight_sync", "eval", "checkpoint")


class RoleFailed(RuntimeError):
    """A role lost more actors than its `max_restarts`, or a learner rank died past
    `train.max_failures`; the message is one line naming the role, the cause and where to resume."""


class RankDied(RuntimeError):
    """A rank of a DeepSpeed group (learner, critic) died; the others were ended with it."""


class PhaseTimeout(RuntimeError):
    """An actor gave no answer within its phase's deadline (a hang, not a death)."""


@dataclass
class FaultLog:
    """Restarts and re-issued requests per role, for `faults/restarts/<role>` and `faults/reissued/<role>`."""

    restarts: Counter = field(default_factory=Counter)
    reissued: Counter = field(default_factory=Counter)
    checkpoint: Callable[[], str | None] = lambda: None  # the newest checkpoint, for the error line

    def metrics(self) -> dict[str, float]:
        out = {f"faults/restarts/{role}": float(n) for role, n in self.restarts.items()}
        out.update({f"faults/reissued/{role}": float(n) for role, n in self.reissued.items()})
        return out

    def resume_hint(self) -> str:
        path = self.checkpoint()
        return (f"resume from {path} with train.resume=latest" if path
                else "no checkpoint to resume from (train.checkpoint_every is 0 or none was written yet)")


class Calls:
    """How a pool talks to its actors: Ray's. `lost(error, actor)`: the error says that this
    actor is gone (not that a call it depended on failed)."""

    def ready(self, refs: list) -> set:
        import ray

        return set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()

    def wait(self, ref, timeout: float) -> bool:
        import ray

        return bool(ray.wait([ref], num_returns=1, timeout=timeout)[0])

    def get(self, ref):
        import ray

        return ray.get(ref)

    def lost(self, error: BaseException, actor) -> bool:
        import ray

        return (isinstance(error, ray.exceptions.RayActorError)
                and error.actor_id in (None, actor._actor_id.hex()))

    def is_dead(self, actor) -> bool:
        """Ray's record says the actor is dead (asks the GCS, not the actor: no wait behind its calls)."""
        from cluster.placement import actor_record

        return actor_record(actor).get("State") == "DEAD"

    def kill(self, actor) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass


RAY_CALLS = Calls()


@dataclass
class Ticket:
    """One request: `call(actor) -> ref`, sent to the actor of `slot`; `actor` is the handle it went
    to (a restarted slot has a new one). `fixed`: this slot's share of the work (a shard), re-sent
    to the same slot once restarted; else to the least-loaded actor."""

    call: Callable
    size: int
    slot: int
    actor: object
    ref: object
    fixed: bool = False
    tries: int = 0


class ActorPool:
    """The actors of one stateless role, replaced when they die (see the module docstring).

    `make_actor(slot)`: a new actor for a slot (in the role's placement group bundle);
    `after_restart(slots)`: runs once new actors exist, before any request is re-sent to them;
    `retryable(error)`: an error that a re-sent request may not meet again (a rollout actor's
    weights fell behind while a sync was being repaired)."""

    def __init__(self, role: str, actors: list, make_actor: Callable[[int], object] | None = None,
                 max_restarts: int = 0, log: FaultLog | None = None, calls: Calls = RAY_CALLS,
                 names: Callable[[int], str] | None = None):
        self.role, self.actors, self.make_actor = role, list(actors), make_actor
        self.max_restarts, self.log, self.calls = max_restarts, log or FaultLog(), calls
        self.names = names or (lambda slot: f"{role}-{slot}")
        self.in_flight: list[list[Ticket]] = [[] for _ in self.actors]
        self.draining: set[int] = set()  # slots being removed: no new requests
        self.removed: set[int] = set()
        self.after_restart: Callable[[list[int]], None] | None = None
        self._waiting: list[int] = []  # new slots whose `after_restart` has not run yet
        self._restarting = False
        self.retryable: Callable[[BaseException], bool] = lambda error: False
        self.timeouts: dict[str, float] = {}  # phase -> seconds (`train.timeouts`); absent: none

    # -- sending ---------------------------------------------------------------------------
    def live(self) -> list[int]:
        return [i for i in range(len(self.actors)) if i not in self.draining and i not in self.removed]

    def load(self, slot: int) -> int:
        """Work in flight on a slot, by request size (finished requests are dropped first)."""
        items = self.in_flight[slot]
        if items:
            done = self.calls.ready([t.ref for t in items])
            items[:] = [t for t in items if t.ref not in done]
        return sum(t.size for t in items)

    def submit(self, call: Callable, size: int = 1) -> Ticket:
        """`call(actor)` on the live actor with the least work in flight (by request size), so a
        slow or busy actor gets less; with equal actors it degenerates to round-robin."""
        slot = min(self.live(), key=lambda i: (self.load(i), i))
        return self._send(Ticket(call, size, slot, None, None))

    def submit_to(self, slot: int, call: Callable, size: int = 1) -> Ticket:
        return self._send(Ticket(call, size, slot, None, None, fixed=True))

    def _send(self, ticket: Ticket) -> Ticket:
        ticket.actor = self.actors[ticket.slot]
        ticket.ref = ticket.call(ticket.actor)
        self.in_flight[ticket.slot].append(ticket)
        return ticket

    # -- receiving -------------------------------------------------------------------------
    def result(self, ticket: Ticket, phase: str):
        """The ticket's value; a call lost with its actor is sent again (to a restarted or
        surviving actor) until it returns, within the role's restart bound."""
        while True:
            self._await(ticket.ref, self.names(ticket.slot), phase)
            try:
                return self.calls.get(ticket.ref)
            except Exception as error:
                if self.calls.lost(error, ticket.actor):
                    self.replace(ticket.slot, ticket.actor, error)
                elif not (self.retryable(error) and ticket.tries < 3):
                    raise
                self.reissue(ticket)

    def _await(self, ref, name: str, phase: str) -> None:
        """Wait for `ref` within the phase's deadline (none: without one); past it, `PhaseTimeout`."""
        timeout = self.timeouts.get(phase)
        if timeout is not None and not self.calls.wait(ref, timeout):
            raise PhaseTimeout(f"{self.role}: {name} gave no answer within {timeout:g} s in phase {phase} "
                               f"(train.timeouts.{phase})")

    def results(self, tickets: list[Ticket], phase: str) -> list:
        return [self.result(t, phase) for t in tickets]

    def reissue(self, ticket: Ticket) -> None:
        self.log.reissued[self.role] += 1
        ticket.tries += 1
        if not ticket.fixed:
            ticket.slot = min(self.live(), key=lambda i: (self.load(i), i))
        self._send(ticket)

    # -- restarts ----------------------------------------------------------------------------
    def replace(self, slot: int, actor, error: BaseException) -> None:
        """The actor of `slot` died: start a new one there (unless that already happened) and run
        `after_restart`; past `max_restarts`, `RoleFailed`."""
        if self.actors[slot] is not actor or slot in self.removed:
            return  # replaced already, on an earlier lost call; or removed
        if slot in self.draining:  # being removed anyway: its requests go to the others
            self.draining.discard(slot)
            self.removed.add(slot)
            self.in_flight[slot] = []
            return
        if self.make_actor is None or self.log.restarts[self.role] >= self.max_restarts:
            raise RoleFailed(f"{self.role}: {self.names(slot)} died ({first_line(error)}) after "
                             f"{self.log.restarts[self.role]} restarts of {self.max_restarts} allowed "
                             f"({self.role}.max_restarts); {self.log.resume_hint()}")
        self.calls.kill(actor)
        self.log.restarts[self.role] += 1
        self.actors[slot] = self.make_actor(slot)
        self.in_flight[slot] = []
        self._bring_up([slot])

    def _bring_up(self, slots: list[int]) -> None:
        """`after_restart` for new slots. A death found while it runs (its weight sync reaches a
        dead actor) is replaced at once, and its slot brought up after the current ones."""
        if self.after_restart is None:
            return
        self._waiting += slots
        if self._restarting:
            return
        self._restarting = True
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                self.after_restart(batch)
        finally:
            self._restarting = False

    def replace_dead(self) -> None:
        """Replace every actor that Ray reports dead (without waiting for a call of it to fail)."""
        for slot, actor in enumerate(list(self.actors)):
            if slot not in self.removed and self.calls.is_dead(actor):
                self.replace(slot, actor, RuntimeError("found dead"))

    def check(self, refs: list, actors: list, phase: str) -> list:
        """Wait for one call per actor that is not re-sent (a weight load): an actor that died
        instead is replaced (its `after_restart` brings it up to date); its value is None."""
        out = []
        for ref, actor in zip(refs, actors):
            slot = self.actors.index(actor) if actor in self.actors else None
            self._await(ref, self.names(slot) if slot is not None else self.role, phase)
            try:
                out.append(self.calls.get(ref))
            except Exception as error:
                if not self.calls.lost(error, actor):
                    raise
                if slot is not None:
                    self.replace(slot, actor, error)
                out.append(None)
        return out

    # -- elastic size ------------------------------------------------------------------------
    def grow(self, count: int) -> list[int]:
        """Add `count` actors (new slots); `after_restart` brings them up to date first. Only as
        many as the cluster has free resources for (`make_actor.room`, where it tells): an actor
        Ray cannot place would hold the run up until a deadline."""
        room = getattr(self.make_actor, "room", None)
        fits = count if room is None else min(count, room(count))
        if fits < count:
            print(f"rewardflow: {self.role}: the cluster has room for {fits} of {count} more actors; "
                  f"adding {fits}", file=sys.stderr, flush=True)
        slots = list(range(len(self.actors), len(self.actors) + fits))
        for slot in slots:
            self.actors.append(self.make_actor(slot))
            self.in_flight.append([])
        self._bring_up(slots)
        return slots

    def drain(self, count: int) -> list[int]:
        """Stop sending to the `count` newest live actors; `reap` ends them once idle."""
        slots = self.live()[::-1][:count]
        if len(slots) >= len(self.live()):
            raise ValueError(f"{self.role}: cannot remove every actor")
        self.draining.update(slots)
        return slots

    def reap(self) -> list[int]:
        """End the draining actors whose requests have all finished; their slots."""
        ended = [s for s in sorted(self.draining) if self.load(s) == 0]
        for slot in ended:
            self.calls.kill(self.actors[slot])
            self.draining.discard(slot)
            self.removed.add(slot)
        return ended


def first_line(error: BaseException) -> str:
    """The cause without Ray's traceback wrapping: the innermost error's first line."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def phase_timeouts(cfg) -> dict[str, float]:
    """Each phase's deadline in seconds: `train.timeouts.<phase>` where set, else a default from
    the recipe's sizes — generous (about 20x what this project's default recipe needs on a 2-core
    machine), so that only a hang reaches it. A step's rollouts may wait for every earlier step's."""
    t, r = cfg.train, cfg.rollout
    new_tokens = t.prompts_per_step * 64 * r.max_new_tokens  # up to 64 samples per prompt
    row_tokens = t.prompts_per_step * 64 * (r.max_prompt_len + r.max_new_tokens)
    base = {
        "generate": 600 + 0.2 * new_tokens * (1 + t.max_staleness),
        "score": 300 + cfg.reward.timeout_s * t.prompts_per_step * 8,
        "judge": 600 + 0.2 * new_tokens,
        "reference": 300 + 0.02 * row_tokens,
        "critic": 300 + 0.02 * row_tokens,
        "update": 600 + 0.1 * row_tokens * cfg.algo.epochs,
        "weight_sync": 600 + t.sync_timeout_s,
        "eval": 1800.0,
        "checkpoint": 1800.0,
    }
    set_ = {k: v for k, v in t.timeouts.model_dump().items() if v is not None}
    return {**base, **set_}
