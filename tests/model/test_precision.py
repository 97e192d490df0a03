"""bf16 training keeps fp32 master weights: at the paper's lr every weight still moves."""

import torch

from model.training import MasterWeights
from tasks.train_step import optimizer_step


def _fraction_moved(with_masters: bool, steps: int = 100) -> float:
    torch.manual_seed(0)
    w = torch.nn.Parameter((torch.randn(4096) * 0.05).bfloat16())
    start = w.detach().clone()
    masters = MasterWeights([w])
    opt = torch.optim.AdamW(masters.master if with_masters else [w], lr=1e-5, weight_decay=0)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        w.float().sum().backward()
        if with_masters:
            optimizer_step(opt, masters, None, 1.0, None, None)
        else:
            opt.step()
    return float((w.detach() != start).float().mean())


def test_bf16_weights_stepped_through_fp32_masters_all_move_at_lr_1e_5():
    assert _fraction_moved(True) == 1.0


def test_the_check_can_fail_pure_bf16_adamw_rounds_most_updates_away():
    assert _fraction_moved(False) < 0.2


def test_fp32_parameters_are_their_own_masters():
    w = torch.nn.Parameter(torch.ones(3))
    assert MasterWeights([w]).master[0] is w
