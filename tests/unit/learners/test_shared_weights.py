"""Parameters moved into shared memory are read in place by other processes (learners/shared_weights.py)."""
import torch


def test_shared_parameters_are_read_in_place_and_outlive_their_file_name():
    from learners.shared_weights import map_shared, share_parameters, unlink

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2, bias=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    desc = share_parameters(model)
    assert [n for n, *_ in desc["layout"]] == ["0.weight", "0.bias", "1.weight"]
    assert all(offset % 64 == 0 for *_, offset in desc["layout"])
    for k, v in model.state_dict().items():  # values unchanged by the move
        assert torch.equal(v, before[k])
    shared = map_shared(desc)
    unlink(desc)  # readers keep their mapping
    # An optimiser step on the learner's parameters is what the reader sees, without a copy.
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    for (name, view), (name2, p) in zip(shared, model.named_parameters()):
        assert name == name2 and torch.equal(view, p.detach())
    assert not torch.equal(shared[0][1], before["0.weight"])
