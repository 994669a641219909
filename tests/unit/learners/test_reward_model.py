"""The reward-model trainer's Bradley-Terry loss and pairwise accuracy (learners/reward_model.py)."""
import torch

from learners.reward_model import bradley_terry_loss, pairwise_correct


def test_bradley_terry_loss_hand_computed():
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    # d = r_c - r_r = [2, 0, -2]; -log σ(d) = log(1 + e^-d):
    # log(1 + e^-2) = 0.126928, log 2 = 0.693147, log(1 + e^2) = 2.126928
    expected = torch.tensor([0.126928, 0.693147, 2.126928])
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), expected, rtol=0, atol=1e-6)


def test_bradley_terry_loss_gradient_pushes_chosen_up():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    # dℓ/dr_c = -(1 - σ(0)) = -0.5; dℓ/dr_r = +0.5
    assert chosen.grad.item() == -0.5 and rejected.grad.item() == 0.5


def test_pairwise_correct_counts_ties_half():
    assert pairwise_correct(torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 0.0])).tolist() == [1.0, 0.5, 0.0]
