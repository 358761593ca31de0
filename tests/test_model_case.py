"""A backbone measured by the unchanged layer metrics (params, flops, memory, time) plus its fidelity."""
import pytest
import torch

from attnbench.cost import case_cost
from attnbench.metrics import MetricContext, get
from attnbench.model_case import ModelCase, fidelity
from mechanisms import backbones

SMALL = (("depths", (1, 2, 1, 1)),)


def _case(model="slide-swin-t", dtype="float32", mode="forward", **kw):
    return ModelCase(model=model, label=model, height=kw.pop("height", 64), width=kw.pop("width", 96), batch_size=2,
                     dtype=dtype, device="cpu", mode=mode, overrides=kw.pop("overrides", SMALL), **kw)


def _measure(case, metric, **options):
    declared = get(metric)
    ctx = MetricContext(case=case, options=declared.make_options(options), device=torch.device("cpu"),
                        dtype=case.torch_dtype)
    return declared.measure(ctx)


def test_params_metric_counts_the_model():
    row = _measure(_case(mode="train"), "params")  # the training form: both shift branches
    model = backbones.build("slide-swin-t", depths=(1, 2, 1, 1))
    assert row["params"] == backbones.count_params(model)
    frozen = sum(p.numel() for n, p in model.named_parameters() if "shift_fixed.weight" in n)
    assert frozen > 0 and row["params_trainable"] == row["params"] - frozen


def test_forward_measures_the_deploy_form_of_every_block():
    """mode: forward serves the model as deployed (Slide's two shift convs merged in every block):
    fewer MACs and parameters than the training form, the same function, and its own identity."""
    fwd, train_form = _case(), _case(form="train")
    assert fwd.resolved_form == "deploy" and fwd.id_row()["form"] == "deploy" and fwd.key() != train_form.key()
    deployed, trained = fwd.build_module(dtype=torch.float64).eval(), train_form.build_module(dtype=torch.float64).eval()
    x = fwd.make_input(dtype=torch.float64)
    with torch.no_grad():
        # merged in float32 before the cast (as served), so equal to float32 rounding
        torch.testing.assert_close(deployed(x), trained(x), rtol=1e-5, atol=1e-6)
    assert case_cost(fwd).macs < case_cost(train_form).macs and case_cost(fwd).params < case_cost(train_form).params
    assert all(a.reparameterized for a in deployed.attention_modules() if hasattr(a, "reparameterized"))
    with pytest.raises(ValueError, match="form 'deploy' is the inference form"):
        _case(mode="train", form="deploy")


@pytest.mark.parametrize("model", ["swin-t", "pale-t"])
def test_flops_metric_analytic_and_both_counters_agree(model):
    case = _case(model, overrides=SMALL, height=100, width=68)
    row = _measure(case, "flops")
    spec_model = backbones.build(model, depths=(1, 2, 1, 1))
    assert row["macs"] == 2 * spec_model.flops(100, 68)["total"]
    assert row["macs_attention"] == 2 * spec_model.flops(100, 68)["attention"]
    assert row["macs_flop_counter"] == row["macs"]
    # fvcore also counts LayerNorms (5 per element), which the papers and the analytic sum leave out.
    assert row["macs"] < row["macs_fvcore"] < 1.01 * row["macs"]
    assert row["macs_mismatch"] is False


def test_memory_and_time_metrics_run_the_model_workload():
    case = _case("swin-t", mode="train")
    mem = _measure(case, "memory", rss=False)
    params_mib = backbones.count_params(backbones.build("swin-t", depths=(1, 2, 1, 1))) * 4 / 2**20
    # Training holds weights and their gradients at least.
    assert mem["peak_memory_mib"] > 2 * params_mib and mem["memory_method"] == "cpu_profiler_allocator"
    # The harness's memory predictor (for skip rows) stays above what the step allocates.
    assert case_cost(case).memory_bytes > mem["peak_memory_mib"] * 2**20
    ticks = iter(range(10**6))
    timing = get("time")
    ctx = MetricContext(case=case, options=timing.make_options({"min_run_time": 0.01, "warmup": 0}),
                        device=torch.device("cpu"), dtype=torch.float32)
    row = timing.measure(ctx, timer=lambda: float(next(ticks)))  # a fake clock: one tick per reading
    assert row["latency_ms"] == pytest.approx(1e3) and row["throughput_img_s"] == pytest.approx(2.0)
    assert row["tokens_per_s"] == pytest.approx(2 * (64 // 4) * (96 // 4))


def test_fidelity_against_float64_copy():
    fp32 = fidelity(_case("pale-t"))
    assert fp32["fid_rel_l2"] < 1e-5 and fp32["fid_cosine"] > 0.999999
    bf16 = fidelity(_case("pale-t", dtype="bfloat16", mode="train"))
    assert 1e-4 < bf16["fid_rel_l2"] < 5e-2  # bf16 rounds (so the error is not zero) but stays close
    assert 1e-4 < bf16["fid_grad_rel_l2"] < 5e-2


def test_case_identity_round_trip():
    case = _case("swin-t", attention="pale")
    assert ModelCase.from_dict(case.to_dict()) == case
    assert case.key() == ModelCase.from_dict(case.to_dict()).key() != _case("swin-t").key()
    row = case.id_row()
    assert row["model"] == "swin-t" and row["mechanism"] == "pale" and row["tokens"] == 16 * 24
    assert _case("slide-swin-t").mechanism == "slide+swin"
