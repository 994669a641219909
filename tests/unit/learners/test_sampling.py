"""The cached two-model sampler draws sequences with the analytic geometric-mixture probabilities."""
import itertools

import pytest
import torch

from learners.sampling import mixture_sequence_logprob, sample_geometric_mixture

EOS = 3


def _tiny_lm(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=16,
                      tie_word_embeddings=False, pad_token_id=0, eos_token_id=EOS)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random init is near-uniform; spread the logits so the mixture matters
        model.lm_head.weight.mul_(40.0)
    return model


def _outcomes() -> list[tuple[int, ...]]:
    """Responses of at most 2 tokens: EOS at once, or two tokens (the second may be EOS)."""
    return [(EOS,)] + [(a, b) for a, b in itertools.product(range(3), range(4))]


@pytest.mark.parametrize("coef", [0.0, 0.3, 1.0])
def test_sampled_frequencies_match_the_analytic_mixture(coef):
    policy, reference = _tiny_lm(0), _tiny_lm(1)
    # Two prompts of different lengths in one batch: exercises left padding and positions.
    prompts = {"long": [1, 2, 1], "short": [2]}
    n = 6000
    batch = [prompts["long"]] * n + [prompts["short"]] * n
    out = sample_geometric_mixture(policy, reference, batch, coef, max_new_tokens=2, temperature=1.0,
                                   eos_ids={EOS}, pad_id=0, generator=torch.Generator().manual_seed(0))
    for k, (name, prompt) in enumerate(prompts.items()):
        drawn = [tuple(t) for t in out.token_ids[k * n:(k + 1) * n]]
        analytic = {o: float(torch.tensor(mixture_sequence_logprob(policy, reference, prompt, list(o), coef)).exp())
                    for o in _outcomes()}
        assert sum(analytic.values()) == pytest.approx(1.0)
        for o, p in analytic.items():
            # Binomial sd ≤ sqrt(0.25 / 6000) = 0.0065; 0.03 is > 4.6 sd for every outcome.
            assert abs(drawn.count(o) / n - p) < 0.03, (name, o, drawn.count(o) / n, p)


def test_sampled_logprobs_are_the_mixture_logprobs_of_the_drawn_tokens():
    policy, reference = _tiny_lm(0), _tiny_lm(1)
    out = sample_geometric_mixture(policy, reference, [[1, 2, 1], [2]], 0.5, max_new_tokens=2, temperature=0.7,
                                   eos_ids={EOS}, pad_id=0, generator=torch.Generator().manual_seed(3))
    for prompt, toks, lps in zip([[1, 2, 1], [2]], out.token_ids, out.logprobs):
        expected = mixture_sequence_logprob(policy, reference, prompt, toks, 0.5, temperature=0.7)
        assert sum(lps) == pytest.approx(expected, abs=1e-5)
        assert out.finish_reasons[0 if prompt == [1, 2, 1] else 1] == ("stop" if toks[-1] == EOS else "length")
