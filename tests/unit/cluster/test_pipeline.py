"""Property tests of the bounded-staleness loop: the real Controller over simulated actors.

The simulated rollout actors keep Ray's one guarantee the pipeline relies on — each actor runs
its calls in the order they were sent — and nothing else: which actor runs next, how chunks are
assigned, and how far generation gets while the learner trains are all drawn by hypothesis.
With `rollout.interrupt`, weight loads go to a second queue (the actor's control group) and apply
between any two engine steps of a generation in progress, as the real actor's do; a request
waits only for the weights sent before it (`min_version`).
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.recipe import load_recipe
from cluster.controller import Controller, Roles
from cluster.faults import ActorPool, Calls, FaultLog
from cluster.groups import PendingRollouts
from core.data import PromptStream
from cluster.pipeline import RolloutPipeline, check_staleness, token_version_metrics
from core.protocol import Prompts, Rollouts, Scores, TermScores
from learners.algos.registry import build_algorithm
from tests.helpers import make_rollouts


TOKENS = 3  # response tokens of every simulated sample, one per engine step


@dataclass(eq=False)
class Call:
    kind: str  # "generate" | "reload"
    payload: object
    done: bool = False
    result: object = None
    lost: bool = False  # its actor died before it finished
    min_version: int = 0  # generate: the newest weights sent before it, which it waits for
    token_versions: list[int] = field(default_factory=list)  # generate: the version of each step so far


@dataclass(eq=False)
class SimActor:
    queue: deque = field(default_factory=deque)  # default group: in order, one call at a time
    control: deque = field(default_factory=deque)  # control group (interrupt): reloads only
    version: int = 0
    generated_with: list[int] = field(default_factory=list)  # the version of every engine step
    alive: bool = True

    def die(self) -> None:
        """kill -9: every call it holds is lost."""
        self.alive = False
        for call in [*self.queue, *self.control]:
            call.done = call.lost = True
        self.queue.clear()
        self.control.clear()

    def runnable(self) -> list[deque]:
        if not self.alive:
            return []
        ready = [self.control] if self.control else []
        if self.queue and (self.queue[0].kind == "reload" or self.queue[0].min_version <= self.version):
            ready.append(self.queue)
        return ready

    def run_next(self, rng) -> None:
        """A reload, or one engine step (one token of every row) of the generate at the head."""
        queue = rng.choice(self.runnable())
        call = queue[0]
        if call.kind == "reload":
            self.version = call.payload
        else:
            call.token_versions.append(self.version)
            self.generated_with.append(self.version)
            if len(call.token_versions) < TOKENS:
                return
            call.result = _rollouts(*call.payload, call.token_versions)
        queue.popleft()
        call.done = True


def _rollouts(prompts: Prompts, n: int, token_versions: list[int]) -> Rollouts:
    rows = [g for g in range(len(prompts)) for _ in range(n)]
    ids = [np.array([1, 2, 3])] * len(rows)
    rollouts = make_rollouts(
        rows, prompt_ids=[prompts.token_ids[g] for g in rows], response_ids=ids,
        rollout_logprobs=[np.zeros(3, dtype=np.float32)] * len(rows), response_texts=["x"] * len(rows),
        policy_versions=np.full(len(rows), min(token_versions)), prompt_texts=[prompts.ids[g] for g in rows],
        answers=["0"] * len(rows))
    return replace(rollouts, token_versions=[np.array(token_versions)] * len(rows))


class Lost(Exception):
    def __init__(self, actor: SimActor):
        self.actor = actor


class SimCalls(Calls):
    """The pool's view of simulated actors: a call is a `Call`; waiting for one runs the
    simulation until it is done (or lost with its actor)."""

    def __init__(self, group: "SimRollouts"):
        self.group = group

    def ready(self, refs: list) -> set:
        return {c for c in refs if c.done}

    def wait(self, ref, timeout: float) -> bool:
        self.group._progress(until=ref)
        return True

    def get(self, ref):
        self.group._progress(until=ref)
        if ref.lost:
            raise Lost(ref.owner)
        return ref.result

    def lost(self, error: BaseException, actor) -> bool:
        return isinstance(error, Lost) and error.actor is actor

    def kill(self, actor) -> None:
        actor.die()

    def is_dead(self, actor) -> bool:
        return not actor.alive


class SimRollouts:
    """The real `ActorPool` (balancing, re-issue, restarts) over simulated actors. With
    `death_rate`, every engine step may kill a random live actor (kill -9): the pool notices when
    it waits for one of the actor's calls, starts a new actor in its slot, the controller's
    `catch_up` queues the current weights on it, and the lost requests go out again."""

    def __init__(self, num_actors: int, rng: random.Random, interrupt: bool = False, death_rate: float = 0.0):
        self.rng, self.interrupt, self.death_rate = rng, interrupt, death_rate
        self.pool = ActorPool("rollout", [SimActor() for _ in range(num_actors)], lambda slot: SimActor(),
                              max_restarts=10**6, log=FaultLog(), calls=SimCalls(self))
        self.last_reload_s = 0.0
        self.delivered: list[Rollouts] = []  # each step's rollouts, in the order steps took them
        self.reloads: list[tuple[Call, SimActor]] = []
        self.every_actor: list[SimActor] = list(self.pool.actors)  # dead ones too

    @property
    def actors(self) -> list[SimActor]:
        return self.pool.actors

    def _progress(self, until: Call | None = None, budget: int | None = None) -> None:
        """Run a randomly chosen runnable call (until `until` is done / budget spent)."""
        while (until is None or not until.done) and (budget is None or budget > 0):
            busy = [a for a in self.actors if a.runnable()]
            if not busy:
                assert until is None, "waiting for a call that can never run"
                return
            if self.death_rate and self.rng.random() < self.death_rate:
                self.rng.choice(busy).die()
                continue
            self.rng.choice(busy).run_next(self.rng)
            budget = None if budget is None else budget - 1

    def _queue(self, actor: SimActor, call: Call) -> Call:
        call.owner = actor
        if not actor.alive:
            call.done = call.lost = True
        else:
            (actor.control if call.kind == "reload" and self.interrupt else actor.queue).append(call)
        if actor not in self.every_actor:
            self.every_actor.append(actor)
        return call

    def submit(self, prompts: Prompts, spec, chunk_prompts, min_version: int = 0, phase: str = "generate"):
        size = chunk_prompts or -(-len(prompts) // len(self.pool.live()))
        offsets = list(range(0, len(prompts), size))
        tickets = [self.pool.submit(lambda a, lo=lo: self._queue(a, Call(
            "generate", (prompts.select(list(range(lo, min(lo + size, len(prompts))))), spec.n),
            min_version=min_version)), min(size, len(prompts) - lo)) for lo in offsets]
        return SimPending(self.pool, tickets, offsets, phase, group=self)

    def start_load_weights(self, version: int, slots: list[int] | None = None) -> None:
        targets = self.actors if slots is None else [self.actors[s] for s in slots]
        self.reloads += [(self._queue(a, Call("reload", version)), a) for a in targets]

    def finish_load_weights(self) -> None:
        self._progress()
        reloads, self.reloads = self.reloads, []
        self.pool.check([c for c, _ in reloads], [a for _, a in reloads], "weight_sync")


@dataclass
class SimPending(PendingRollouts):
    group: SimRollouts | None = None

    def result(self) -> Rollouts:
        if self._result is None:
            super().result()
            self.group.delivered.append(self._result)
        return self._result


class SimRewards:
    def __init__(self):
        self.scored_prompts: list[str] = []  # prompt ids in the order steps consumed them

    def submit(self, pending):
        return SimScores(pending, self)

    def state(self) -> dict:
        return {"scored": list(self.scored_prompts)}

    def load_state(self, state: dict) -> None:
        self.scored_prompts = list(state["scored"])


@dataclass
class SimScores:
    pending: SimPending
    group: SimRewards

    def result(self) -> Scores:
        rollouts = self.pending.result()
        self.group.scored_prompts += [t for i, t in enumerate(rollouts.prompt_texts) if i % 2 == 0]
        values = np.array([hash(t) % 3 for t in rollouts.prompt_texts], dtype=float) + np.arange(len(rollouts)) % 2
        raw = TermScores(terms={"r": values}, errors=[None] * len(rollouts))
        return Scores(values=values, terms=raw.terms, errors=raw.errors)


class SimLearners:
    """The update lets the rollout actors make progress meanwhile, as real ones would."""

    def __init__(self, rollouts: SimRollouts, rng: random.Random):
        self.rollouts, self.rng, self.trained_on = rollouts, rng, []

    def update(self, batch, algorithm, max_new_tokens):
        self.rollouts._progress(budget=self.rng.randint(0, 6))
        return {"loss/policy": 0.0}


class SimSync:
    def __init__(self, rollouts: SimRollouts):
        self.rollouts = rollouts
        self.last_reload_s = 0.0

    def start(self, version: int) -> None:
        self.rollouts.start_load_weights(version)

    def finish(self) -> None:
        self.rollouts.finish_load_weights()

    def catch_up(self, slots: list[int], version: int) -> bool:
        """As the object store's: the new actors load the learner's weights before anything else."""
        if slots:
            self.rollouts.start_load_weights(version, slots)
            self.rollouts.finish_load_weights()
        return False


class SilentLogger:
    run_id = "silent"
    def samples_table(self, *args): pass
    def log(self, *args): pass


def _controller(k: int, sync_every: int, actors: int, chunk: int | None, steps: int, seed: int,
                interrupt: bool = False, death_rate: float = 0.0):
    cfg = load_recipe("recipes/grpo_arith.yaml", [
        f"train.max_staleness={k}", f"train.sync_every={sync_every}", f"train.steps={steps}",
        "train.prompts_per_step=3", "algo.group_size=2", f"rollout.num_workers={actors}",
        f"rollout.chunk_prompts={'null' if chunk is None else chunk}", f"rollout.interrupt={str(interrupt).lower()}"])
    prompts = Prompts(ids=[f"p{i}" for i in range(7)], texts=[f"p{i}" for i in range(7)],
                      token_ids=[np.array([5, i]) for i in range(7)], answers=["0"] * 7)
    rng = random.Random(seed)
    rollouts = SimRollouts(actors, rng, cfg.rollout.interrupt, death_rate)
    roles = Roles(rollouts=rollouts, rewards=SimRewards(), learners=SimLearners(rollouts, rng),
                  reference=None, sync=SimSync(rollouts), faults=rollouts.pool.log)
    return Controller(cfg, roles, build_algorithm(cfg.algo), prompts, prompts, 0, SilentLogger()), prompts


@settings(max_examples=100, deadline=None)
@given(k=st.integers(0, 3), sync_every=st.integers(1, 3), actors=st.integers(1, 3),
       chunk=st.one_of(st.none(), st.integers(1, 3)), steps=st.integers(1, 9),
       cut=st.integers(0, 9), seed=st.integers(0, 2**16), interrupt=st.booleans(),
       death_rate=st.sampled_from([0.0, 0.0, 0.02, 0.1]))
def test_staleness_bound_order_and_versions_hold_for_any_schedule(k, sync_every, actors, chunk, steps, cut, seed,
                                                                  interrupt, death_rate):
    """... and when rollout actors die at random engine steps: the pool restarts them, they get
    the current weights first, and their lost requests go out again."""
    interrupt = interrupt and k > 0  # the synchronous loop has no interrupt (recipe check)
    controller, prompts = _controller(k, sync_every, actors, chunk, steps, seed, interrupt, death_rate)
    bound = k + sync_every - 1
    cut = min(cut, steps)
    # The loop stops after `cut` steps with rollouts in flight and restarts as a new controller
    # with new rollout actors from its state (as `train.resume` does): nothing is lost or repeated.
    runs = []
    for segment in (range(cut), range(cut, steps)):
        if segment.start > 0:
            state = controller.state(segment.start, wall_s=0.0)
            controller, _ = _controller(k, sync_every, actors, chunk, steps, seed + 1, interrupt, death_rate)
            controller.restore(state)
        runs.append(controller)
        for step in segment:
            metrics = controller.train_step(step)
            assert 0 <= metrics["async/staleness"] <= bound
            assert 0 <= metrics["async/token_staleness"] <= metrics["async/staleness"]
            assert metrics["async/in_flight"] <= k + sync_every - 1
            assert interrupt or metrics["async/interrupted_frac"] == 0
    # Every token of step s's rollouts is at most `bound` versions old (and not from the future);
    # within a row, versions never go back; a row's version is its oldest token's.
    taken = [r for run in dict.fromkeys(runs) for r in run.roles.rollouts.delivered]  # cut 0: one run
    assert len(taken) == steps
    for step, rollouts in enumerate(taken):
        for version, tokens in zip(rollouts.policy_versions, rollouts.token_versions):
            assert version == tokens.min() and (np.diff(tokens) >= 0).all()
            assert step - bound <= tokens.min() and tokens.max() <= step
    stream = PromptStream(prompts, controller.cfg.train.seed)
    expected = [i for _ in range(steps) for i in stream.next_batch(3).ids]
    assert controller.samples_seen == steps * 3 * 2
    # Versions seen by each actor never go back.
    for run in runs:
        for actor in run.roles.rollouts.every_actor:
            assert actor.generated_with == sorted(actor.generated_with)
    # A restart replaces a dead actor, once.
    for run in runs:
        dead = [a for a in run.roles.rollouts.every_actor if not a.alive]
        assert run.roles.rollouts.pool.log.restarts["rollout"] <= len(dead)
    assert controller.pipeline.next_step == steps and len(controller.pipeline) == 0
    assert controller.roles.rewards.scored_prompts == expected


def test_dead_rollout_actors_are_restarted_and_their_requests_reissued():
    # Actors die often (1 engine step in 10); every step still trains on its own prompts, within
    # the bound, and no actor (restarted ones included) ever generates with older weights than before.
    controller, prompts = _controller(k=1, sync_every=1, actors=2, chunk=1, steps=8, seed=3, death_rate=0.1)
    metrics = [controller.train_step(s) for s in range(8)]
    assert all(0 <= m["async/staleness"] <= 1 for m in metrics)
    log = controller.roles.faults
    assert log.restarts["rollout"] >= 2 and log.reissued["rollout"] >= log.restarts["rollout"]
    assert metrics[-1]["faults/restarts/rollout"] == log.restarts["rollout"]
    stream = PromptStream(prompts, controller.cfg.train.seed)
    assert [controller.batches[s] for s in range(8)] == [stream.next_batch(3).ids for _ in range(8)]
    assert controller.roles.rewards.scored_prompts == [i for s in range(8) for i in controller.batches[s]]
    reborn = controller.roles.rollouts.every_actor[2:]  # the replacements, in the order they started
    assert reborn and all(a.generated_with == sorted(a.generated_with) for a in reborn)


def test_synchronous_loop_trains_every_step_on_the_newest_weights():
    controller, _ = _controller(k=0, sync_every=1, actors=2, chunk=1, steps=5, seed=0)
    assert [controller.train_step(s)["async/staleness"] for s in range(5)] == [0.0] * 5


def test_staleness_reaches_k_when_generation_runs_ahead():
    # Actors finish every queued call as soon as the learner trains: step s uses version s - k.
    controller, _ = _controller(k=2, sync_every=1, actors=1, chunk=None, steps=6, seed=0)
    controller.roles.learners.rng = random.Random(0)
    controller.roles.learners.update = lambda *a: (controller.roles.rollouts._progress(), {})[1]
    assert [controller.train_step(s)["async/staleness"] for s in range(6)] == [0.0, 1.0, 2.0, 2.0, 2.0, 2.0]


class FirstChoice:
    """An rng that always picks the first runnable queue: an actor's control group (reloads) first."""

    def choice(self, items):
        return items[0]


@pytest.mark.parametrize("interrupt,interrupted", [(False, [0.0] * 4), (True, [0.0, 1.0, 1.0, 1.0])])
def test_a_weight_load_interrupts_the_generation_in_progress(interrupt, interrupted):
    # One actor; while step t trains it makes one engine step (token 1 of 3) of step t+1's request,
    # then the weights of version t+1 are sent. Without interrupt they wait for the request to
    # end: its rows are all version t. With it they apply at once: tokens 2 and 3 are version t+1.
    controller, _ = _controller(k=1, sync_every=1, actors=1, chunk=None, steps=4, seed=0, interrupt=interrupt)
    rollouts = controller.roles.rollouts
    rollouts.rng = FirstChoice()
    controller.roles.learners.update = lambda *a: (rollouts._progress(budget=1), {})[1]
    metrics = [controller.train_step(s) for s in range(4)]
    assert [m["async/interrupted_frac"] for m in metrics] == interrupted
    assert [m["async/staleness"] for m in metrics] == [0.0, 1.0, 1.0, 1.0]  # the oldest token: version t
    # step t trains on tokens of versions [t-1, t, t] (mean staleness 1/3) or [t-1] * 3 (1)
    expected = [0.0] + [1 / 3 if interrupt else 1.0] * 3
    assert [m["async/token_staleness"] for m in metrics] == pytest.approx(expected)
    assert rollouts.delivered[1].token_versions[0].tolist() == ([0, 1, 1] if interrupt else [0, 0, 0])


def test_pipeline_refuses_to_pop_a_step_it_never_requested():
    pipeline = RolloutPipeline(1, lambda step: step)
    with pytest.raises(RuntimeError, match="never requested"):
        pipeline.pop(0)


def test_token_version_metrics_count_tokens_and_mixed_rows():
    rollouts = replace(make_rollouts([0, 0, 1], response_ids=[np.zeros(3), np.zeros(1), np.zeros(0)], policy_versions=[4, 5, 5]),
                       token_versions=[np.array([4, 5, 5]), np.array([5]), np.array([], dtype=int)])
    metrics = token_version_metrics(5, rollouts)
    # trained version 5: token staleness [1, 0, 0] and [0] -> 1/4; one of three rows mixes versions
    assert metrics == {"async/token_staleness": 0.25, "async/interrupted_frac": pytest.approx(1 / 3)}
    # no per-token versions: each token has its row's version, no row is mixed
    plain = make_rollouts([0, 1], response_ids=[np.zeros(2), np.zeros(2)], policy_versions=[3, 5])
    assert token_version_metrics(5, plain) == {"async/token_staleness": 1.0, "async/interrupted_frac": 0.0}


def test_check_staleness_raises_outside_the_bound():
    assert check_staleness(5, [4, 5], 1) == 1
    with pytest.raises(RuntimeError, match="staleness 2 outside"):
        check_staleness(5, [3, 5], 1)
