"""The fault logic on its own: the actor pool's restarts, re-issues, deadlines and resizing over
fake calls, the deadlines' defaults, the scale request, and the learner's restart rules."""
import json
from collections import Counter

import pytest

from apps.scale import request_scale
from cluster.controller import read_scale_request
from cluster.faults import ActorPool, Calls, FaultLog, PhaseTimeout, RoleFailed, phase_timeouts
from cluster.recipe import load_recipe
from core.config import ConfigError


class Dead(Exception):
    def __init__(self, actor):
        super().__init__(f"{actor.name} is gone")
        self.actor = actor


class Actor:
    def __init__(self, name: str):
        self.name, self.alive, self.calls = name, True, []


class Ref:
    def __init__(self, actor: Actor, value, hang: bool = False):
        self.actor, self.value, self.hang, self.done = actor, value, hang, False


class FakeCalls(Calls):
    """Calls that finish when waited for, unless their actor is dead (lost) or they hang."""

    def __init__(self):
        self.killed = []

    def ready(self, refs):
        return {r for r in refs if r.done}

    def wait(self, ref, timeout):
        return not ref.hang

    def get(self, ref):
        ref.done = True
        if not ref.actor.alive:
            raise Dead(ref.actor)
        return ref.value

    def lost(self, error, actor):
        return isinstance(error, Dead) and error.actor is actor

    def is_dead(self, actor):
        return not actor.alive

    def kill(self, actor):
        actor.alive = False
        self.killed.append(actor.name)


def pool_of(n: int, max_restarts: int = 2, log: FaultLog | None = None):
    made = iter(f"new{i}" for i in range(100))
    pool = ActorPool("rollout", [Actor(f"a{i}") for i in range(n)], lambda slot: Actor(next(made)),
                     max_restarts=max_restarts, log=log or FaultLog(), calls=FakeCalls())
    return pool


def call(value, hang: bool = False):
    def send(actor):
        actor.calls.append(value)
        return Ref(actor, value, hang)
    return send


def test_a_request_lost_with_its_actor_goes_to_the_restarted_actor_after_it_caught_up():
    pool = pool_of(2)
    caught_up = []
    pool.after_restart = lambda slots: caught_up.append((slots, [pool.actors[s].name for s in slots]))
    first, second = pool.submit(call("x"), size=4), pool.submit(call("y"), size=1)
    assert (first.slot, second.slot) == (0, 1)  # least loaded: round-robin over idle actors
    pool.actors[0].alive = False  # kill -9 while "x" is in flight
    assert pool.result(first, "generate") == "x"
    assert caught_up == [([0], ["new0"])]
    assert first.slot == 0 and pool.actors[0].calls == ["x"]  # the restarted actor, the least loaded, took it
    assert pool.log.restarts == Counter(rollout=1) and pool.log.reissued == Counter(rollout=1)
    assert pool.log.metrics() == {"faults/restarts/rollout": 1.0, "faults/reissued/rollout": 1.0}
    assert pool.calls.killed == ["a0"]
    assert pool.result(second, "generate") == "y"


def test_two_lost_calls_of_one_actor_restart_it_once():
    pool = pool_of(1)
    a, b = pool.submit(call(1)), pool.submit(call(2))
    pool.actors[0].alive = False
    assert [pool.result(a, "generate"), pool.result(b, "generate")] == [1, 2]
    assert pool.log.restarts["rollout"] == 1 and pool.log.reissued["rollout"] == 2


def test_past_max_restarts_the_role_fails_with_one_line_naming_it_and_the_checkpoint():
    log = FaultLog(checkpoint=lambda: "/runs/x/checkpoints/step_4")
    pool = pool_of(1, max_restarts=1, log=log)
    ticket = pool.submit(call("x"))
    pool.actors[0].alive = False
    pool.result(ticket, "generate")
    assert log.restarts["rollout"] == 1
    ticket = pool.submit(call("x"))
    pool.actors[0].alive = False
    with pytest.raises(RoleFailed) as e:
        pool.result(ticket, "generate")
    assert str(e.value) == ("rollout: rollout-0 died (Dead: new0 is gone) after 1 restarts of 1 allowed (rollout.max_restarts); "
                            "resume from /runs/x/checkpoints/step_4 with train.resume=latest")
    assert "\n" not in str(e.value)


def test_without_a_checkpoint_the_error_says_so():
    assert FaultLog().resume_hint() == ("no checkpoint to resume from (train.checkpoint_every is 0 or none was "
                                        "written yet)")


def test_a_hang_past_the_phase_deadline_names_the_actor_and_the_phase():
    pool = pool_of(2)
    pool.timeouts = {"score": 12.5}
    pool.submit(call("fine"))
    ticket = pool.submit(call("stuck", hang=True))
    with pytest.raises(PhaseTimeout, match=r"^rollout: rollout-1 gave no answer within 12.5 s in phase score "
                                           r"\(train.timeouts.score\)$"):
        pool.result(ticket, "score")
    assert pool.log.restarts["rollout"] == 0  # a hang is not a death


def test_a_fixed_shard_goes_back_to_its_own_slot():
    pool = pool_of(3)
    ticket = pool.submit_to(2, call("shard2"))
    pool.actors[2].alive = False
    assert pool.result(ticket, "reference") == "shard2"
    assert ticket.slot == 2 and pool.actors[2].name == "new0"


def test_retryable_errors_are_sent_again_a_bounded_number_of_times():
    pool = pool_of(1)
    failures = iter([RuntimeError("behind"), RuntimeError("behind")])

    class Flaky(FakeCalls):
        def get(self, ref):
            error = next(failures, None)
            if error is not None:
                raise error
            return ref.value

    pool.calls = Flaky()
    pool.retryable = lambda error: str(error) == "behind"
    assert pool.result(pool.submit(call("ok")), "generate") == "ok"
    assert pool.log.reissued["rollout"] == 2
    pool.retryable = lambda error: False
    failures = iter([RuntimeError("other")])
    with pytest.raises(RuntimeError, match="other"):
        pool.result(pool.submit(call("ok")), "generate")


def test_grow_brings_new_actors_up_first_and_drain_ends_the_newest_once_idle():
    pool = pool_of(1)
    brought = []
    pool.after_restart = brought.append
    assert pool.grow(2) == [1, 2] and brought == [[1, 2]]
    assert pool.live() == [0, 1, 2]
    busy = pool.submit_to(2, call("long", hang=True))
    assert pool.drain(2) == [2, 1]
    assert pool.live() == [0]
    assert pool.submit(call("next")).slot == 0  # draining actors take nothing new
    assert pool.reap() == [1]  # slot 2 still has a request in flight
    busy.ref.done = True
    assert pool.reap() == [2] and pool.removed == {1, 2} and pool.calls.killed == ["new0", "new1"]
    with pytest.raises(ValueError, match="cannot remove every actor"):
        pool.drain(1)


def test_a_death_found_while_catching_up_is_repaired_after_it():
    pool = pool_of(2)
    order = []

    def catch_up(slots):
        order.append(list(slots))
        if len(order) == 1:  # the sync for slot 0's replacement finds actor 1 dead
            pool.actors[1].alive = False
            pool.replace_dead()

    pool.after_restart = catch_up
    ticket = pool.submit(call("x"))
    pool.actors[0].alive = False
    pool.result(ticket, "generate")
    assert order == [[0], [1]] and pool.log.restarts["rollout"] == 2


def test_phase_deadlines_default_from_the_recipe_and_can_be_set():
    cfg = load_recipe("recipes/grpo_arith.yaml", ["train.prompts_per_step=8", "rollout.max_new_tokens=48",
                                                  "train.timeouts.update=90"])
    timeouts = phase_timeouts(cfg)
    # generate: 600 s + 0.2 s per token of 8 prompts x 64 samples x 48 tokens, synchronous loop
    assert timeouts["generate"] == pytest.approx(600 + 0.2 * 8 * 64 * 48)
    assert timeouts["update"] == 90.0
    assert set(timeouts) == {"generate", "score", "judge", "reference", "critic", "update", "weight_sync", "eval",
                             "checkpoint"}
    with pytest.raises(ConfigError, match="train.timeouts.update"):
        load_recipe("recipes/grpo_arith.yaml", ["train.timeouts.update=0"])
    with pytest.raises(ConfigError, match="rollout.max_restarts"):
        load_recipe("recipes/grpo_arith.yaml", ["rollout.max_restarts=-1"])


def test_scale_requests_are_validated_and_merged(tmp_path):
    (tmp_path / "logs").mkdir()
    path = request_scale(str(tmp_path), "rollout", 3)
    request_scale(str(tmp_path), "reward", 2)
    assert json.loads(path.read_text()) == {"rollout": 3, "reward": 2}
    assert read_scale_request(path) == {"rollout": 3, "reward": 2}
    with pytest.raises(ConfigError, match="not a run's output directory"):
        request_scale(str(tmp_path / "nope"), "rollout", 1)
    with pytest.raises(ConfigError, match="'learner' cannot be scaled"):
        request_scale(str(tmp_path), "learner", 1)
    with pytest.raises(ConfigError, match="outside 1..1024"):
        request_scale(str(tmp_path), "rollout", 0)
    for text, message in (("{", "not readable JSON"), ("[1]", "expected an object"),
                          ('{"rollout": true}', "must be an integer"), ('{"critic": 1}', "cannot be scaled")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_scale_request(path)


def test_a_dead_learner_rank_needs_checkpoints_and_restarts_a_bounded_number_of_times(tmp_path):
    from cluster.faults import RankDied
    from tests.unit.cluster.test_pipeline import _controller

    controller, _ = _controller(k=0, sync_every=1, actors=1, chunk=None, steps=3, seed=0)
    died = RankDied("learner (update): rank 1 died (ActorDiedError: gone)")
    with pytest.raises(RoleFailed, match=r"^learner \(update\): rank 1 died \(ActorDiedError: gone\); the run cannot "
                                         r"restart the learner without checkpoints \(set train.checkpoint_every\)$"):
        controller.recover_learners(died)
    controller.cfg = load_recipe("recipes/grpo_arith.yaml", [f"train.output_dir={tmp_path}", "train.checkpoint_every=1",
                                                             "train.max_failures=0"])
    controller.rebuild_learners = lambda: pytest.fail("past max_failures nothing is rebuilt")
    with pytest.raises(RoleFailed, match=r"0 learner restarts of 0 allowed \(train.max_failures\); no checkpoint"):
        controller.recover_learners(died)


def test_grow_adds_only_what_the_cluster_has_room_for(capsys):
    class Maker:
        def __init__(self):
            self.made = 0

        def __call__(self, slot):
            self.made += 1
            return Actor(f"new{slot}")

        def room(self, count):
            return 1

    pool = ActorPool("rollout", [Actor("a0")], Maker(), calls=FakeCalls())
    assert pool.grow(3) == [1] and pool.make_actor.made == 1
    assert "room for 1 of 3 more actors; adding 1" in capsys.readouterr().err
