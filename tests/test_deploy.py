"""The deploy form: ``AttentionBase.deploy()``, which form each case runs, and that every cost follows it.

Inference is measured as served (Slide with its two shift convs merged into one), training in the
training form; a suite may ask for the training form in forward mode to show the difference.
"""
import pytest
import torch

import mechanisms
from attnbench import UserError
from attnbench.case import Case
from attnbench.metrics import MetricContext, fidelity, params
from attnbench.metrics.flops import analytic_macs
from attnbench.suite import validate_suite
from mechanisms.reference import reference_forward
from perturb import perturbed




def _case(mechanism="slide", mode="forward", form=None, **kw):
    base = dict(mechanism=mechanism, label=mechanism, options=(), height=9, width=11, batch_size=2, dim=16,
                num_heads=2, dtype="float32", device="cpu", mode=mode, form=form)
    return Case(**{**base, **kw})


@pytest.mark.parametrize("deformable", [True, False])
@pytest.mark.parametrize("H,W", [(8, 8), (5, 9), (1, 4)])
def test_deployed_slide_equals_training_slide_in_float64(deformable, H, W):
    torch.manual_seed(0)
    attn = perturbed(mechanisms.build("slide", 16, 2, deformable=deformable)).double().eval()
    x = torch.randn(2, H, W, 16, dtype=torch.float64)
    served = attn.deploy()
    assert served is not attn and served.reparameterized and not attn.reparameterized  # the original is untouched
    assert served.shift is not None and served.shift_fixed is None and served.shift_learned is None
    torch.testing.assert_close(served(x), attn(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(served(x), reference_forward(attn, x), rtol=0, atol=1e-12)
    assert served.deploy() is served  # already served


@pytest.mark.parametrize("name", [n for n in mechanisms.available() if n not in ("slide", "swin")])
def test_deploy_is_the_identity_for_mechanisms_without_a_reparameterisation(name):
    attn = mechanisms.build(name, 16, 2)
    assert attn.deploy() is attn


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("explicit", [True, False])
def test_served_swin_folds_bias_and_mask_and_equals_the_training_form(shift, explicit, monkeypatch):
    """Swin's served copy adds one folded bias+mask constant per size (built once); its outputs equal
    the training form's and the reference on sizes with and without padding, and the original is
    untouched. With gradients on, it still trains its bias table (the fold is inference only)."""
    import mechanisms.swin as swin

    monkeypatch.setattr(swin, "EXPLICIT", {("cpu", torch.float64): explicit})
    torch.manual_seed(0)
    attn = mechanisms.build("swin", 16, 2, window_size=4, shift=shift).double().eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    served = attn.deploy()
    assert served is not attn and served.served and not attn.served and served.deploy() is served
    assert served.state_dict().keys() == attn.state_dict().keys()
    for H, W, B in [(8, 8, 1), (9, 11, 1), (8, 8, 2), (9, 11, 2)]:  # the explicit path folds at batch 1
        x = torch.randn(B, H, W, 16, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(served(x), attn(x), rtol=0, atol=1e-12)
            torch.testing.assert_close(served(x), reference_forward(attn, x), rtol=0, atol=1e-10)
    folds = [k for k in served._mask_cache if k[0] == "bias+mask"]
    # one per masked size (9x11 pads; 8x8 only when shifted); the explicit path folds only where the
    # mask is not confined to the last row and column of windows (9x11 shifted), and adds it to
    # those two slices elsewhere
    assert len(folds) == ((1 if shift else 0) if explicit else (2 if shift else 1))
    assert not any(k[0] == "bias+mask" for k in attn._mask_cache)
    x = torch.randn(1, 9, 11, 16, dtype=torch.float64)
    (g,) = torch.autograd.grad(served(x).sum(), [served.relative_position_bias_table])
    assert g.abs().sum() > 0


def test_forward_cases_run_the_deploy_form_and_train_cases_the_training_form():
    forward, train = _case(mode="forward").build_module(), _case(mode="train").build_module()
    assert forward.reparameterized and not train.reparameterized
    asked = _case(mode="forward", form="train")
    assert not asked.build_module().reparameterized
    assert [c.resolved_form for c in (_case(), _case(mode="train"), asked)] == ["deploy", "train", "train"]
    assert [c.id_row()["form"] for c in (_case(), _case(mode="train"), asked)] == ["deploy", "train", "train"]


def test_default_form_keeps_the_case_key_and_a_non_default_form_changes_it():
    default, explicit = _case(), _case(form="deploy")
    assert explicit == default and explicit.form is None and explicit.key() == default.key()
    assert _case(form="train").key() != default.key()
    assert "(train form)" in _case(form="train").describe() and "form" not in default.describe()
    assert Case.from_dict(_case(form="train").to_dict()) == _case(form="train")


def test_deploy_form_in_train_mode_is_refused():
    with pytest.raises(ValueError, match="form 'deploy' is the inference form; mode 'train' measures the training form"):
        _case(mode="train", form="deploy")


def test_macs_and_params_follow_the_form_that_runs():
    H, W, C, k = 9, 11, 16, 3
    N = H * W
    ctx = lambda case: MetricContext(case=case, options=None, device=torch.device("meta"), dtype=torch.float32)  # noqa: E731
    deploy, train = _case(), _case(form="train")
    linear_and_attention = 4 * N * C * C + 2 * k**2 * N * C
    assert analytic_macs(ctx(deploy))["total"] == 2 * (linear_and_attention + 2 * k**4 * N * C)
    assert analytic_macs(ctx(train))["total"] == 2 * (linear_and_attention + 4 * k**4 * N * C)
    # Merged: one (trainable) conv instead of a frozen one-hot conv plus a learnable one.
    d, k2 = C // 2, k * k
    conv = d * k2 * k * k + d * k2  # weight + bias of one shift conv
    assert params.measure(ctx(train))["params"] - params.measure(ctx(deploy))["params"] == conv
    assert params.measure(ctx(train))["params_trainable"] - params.measure(ctx(deploy))["params_trainable"] == d * k2


def test_fidelity_judges_the_form_that_runs():
    case = _case(dtype="float32")
    row = fidelity.measure(MetricContext(case=case, options=fidelity.Options(), device=torch.device("cpu"),
                                         dtype=torch.float32))
    assert row["fid_pass"], row
    assert row["fid_rel_l2"] < 1e-5


def _suite(**keys):
    return validate_suite({"name": "t", "mechanisms": ["slide", "swin"], "resolutions": [8], "dim": 16,
                           "num_heads": 2, "device": "cpu", **keys})


def test_suite_form_key_expands_and_auto_is_the_default():
    assert {(c.mode, c.resolved_form) for c in _suite(mode=["forward", "train"]).expand()} == {
        ("forward", "deploy"), ("train", "train")}
    cases = _suite(form=["auto", "train"]).expand()
    assert sorted((c.label, c.resolved_form) for c in cases) == [
        ("slide", "deploy"), ("slide", "train"), ("swin", "deploy"), ("swin", "train")]
    assert len(_suite(form=["auto", "deploy"]).expand()) == 2  # auto is deploy in forward: one case each
    assert _suite().as_dict()["form"] == "auto"


def test_suite_refuses_the_deploy_form_in_train_mode():
    with pytest.raises(UserError, match=r"^<suite>: key 'form': 'deploy' is the inference form and mode 'train' "
                                        r"measures the training form; use form: auto"):
        _suite(mode=["forward", "train"], form="deploy")
    with pytest.raises(UserError, match=r"key 'form': 'sometimes' is not allowed"):
        _suite(form="sometimes")



@pytest.mark.parametrize("form", ["deploy", "train"])
def test_counted_macs_of_slide_follow_the_form(form):
    """fvcore and FlopCounterMode count what the kernel runs: one conv matrix deployed, two in training."""
    from attnbench.metrics import flops

    case = _case(form=form, height=13, width=17)
    row = flops.measure(MetricContext(case=case, options=flops.Options(), device=torch.device("cpu"), dtype=torch.float32))
    assert row["macs_fvcore"] == row["macs_flop_counter"] == row["macs"], row


@pytest.mark.parametrize("form", [None, "train"])
def test_stored_rows_of_either_form_pass_the_row_check(form):
    """A results row's key is recomputed from its identity cells (attnbench.rowcheck): the form cell
    counts only when it is not the mode's default, exactly as in Case.key."""
    from attnbench.rowcheck import _identity_problem

    case = _case(form=form)
    cells = {k: str(v) if v is not None else "" for k, v in case.id_row().items()}
    cells.update(case_key=case.key(), status="ok")
    assert _identity_problem(cells) is None
    assert _identity_problem({**cells, "form": "train" if form is None else "deploy"}) is not None
