"""Which ends can form the collective weight-broadcast group (cluster/weight_sync.py)."""
import pytest

from cluster.weight_sync import CollectiveSync, collective_blocker
from core.config import ConfigError


@pytest.mark.parametrize("devices,why", [
    (["cpu", "cpu", "cpu"], None),  # gloo
    (["cuda:a", "cuda:b", "cuda:c"], None),  # NCCL, one process per GPU
    (["cuda:a", "cuda:b", "cuda:a"], "share a GPU"),  # a rollout engine on the learner's GPU
    (["cuda:a", "cpu"], "different kinds of device"),
])
def test_collective_needs_one_kind_of_device_and_one_process_per_gpu(devices, why):
    found = collective_blocker(devices)
    assert found is None if why is None else why in found


def test_asking_for_the_collective_where_it_cannot_work_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^train.weight_sync: collective impossible: two of its processes share a GPU"):
        CollectiveSync(learners=None, rollouts=None, timeout_s=1.0, devices=["cuda:a", "cuda:a"])
