"""Hidden-unit pruning of nn.LSTM / nn.GRU / nn.RNN: physical shapes, exact outputs, cost model, errors, zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.config import AutocompressError, EnvConfig, PruneConfig
from autocompress.measure.flops import count_macs_params
from autocompress.pruning import CRITERIA, PruneError, Pruner

T, F = 12, 10  # time steps (image rows) and features per step (row width) of the test inputs
X = torch.randn(3, 1, T, F, generator=torch.Generator().manual_seed(0))
GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}
CELL_OPS = {nn.LSTM: 10, nn.GRU: 7, nn.RNN: 1}  # element-wise MACs per unit and step (Torch-Pruning's convention)


class SeqNet(nn.Module):
    """Rows of an image -> recurrent layer(s) -> Linear head on the last step (`read="out"`) or on h_n."""

    def __init__(self, cls: type, num_layers: int = 1, read: str = "out", stacked: bool = False) -> None:
        super().__init__()
        self.read = read
        self.rnn = cls(F, 16, num_layers=num_layers, batch_first=True)
        self.rnn2 = cls(16, 12, batch_first=True) if stacked else None
        self.fc = nn.Linear(12 if stacked else 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x.flatten(1, 2))
        if self.rnn2 is not None:
            out, state = self.rnn2(out)
        if self.read == "h":
            h = state[0] if isinstance(state, tuple) else state
            return self.fc(h[-1])
        return self.fc(out[:, -1])


def _net(cls: type, **kw: object) -> SeqNet:
    torch.manual_seed(0)
    return SeqNet(cls, **kw).eval()


def _hand_count(model: nn.Module, steps: int) -> tuple[int, int]:
    """MACs and params from the modules' real weight shapes: per step one MAC per recurrent weight and bias
    element plus the gates' element-wise ops; a Linear costs in x out + out."""
    macs = 0
    for m in model.modules():
        if type(m) in GATES:
            per_step = 0
            for layer in range(m.num_layers):
                w_ih, w_hh = getattr(m, f"weight_ih_l{layer}"), getattr(m, f"weight_hh_l{layer}")
                hidden = w_hh.shape[1]
                assert w_ih.shape[0] == w_hh.shape[0] == GATES[type(m)] * hidden
                per_step += w_ih.shape[0] * w_ih.shape[1] + w_hh.shape[0] * w_hh.shape[1]
                per_step += 2 * w_hh.shape[0] + CELL_OPS[type(m)] * hidden
            macs += per_step * steps
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features + m.out_features
    return macs, sum(p.numel() for p in model.parameters())


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("num_layers, read", [(1, "out"), (2, "out"), (2, "h")])
def test_hidden_units_are_removed_physically_and_the_model_exports(cls, num_layers, read, tmp_path):
    model = _net(cls, num_layers=num_layers, read=read)
    pruner = Pruner(model, X[:1])
    [g] = pruner.groups
    assert (g.name, g.kind, g.channels, g.members, g.in_channels) == ("rnn", "recurrent", 16, ("rnn", "fc"), F)
    pruned = pruner.prune({"rnn": 0.5})
    rnn, gates = pruned.rnn, GATES[cls]
    assert rnn.hidden_size == 8 and pruned.fc.weight.shape == (5, 8)
    for layer in range(num_layers):
        assert getattr(rnn, f"weight_ih_l{layer}").shape == (gates * 8, F if layer == 0 else 8)
        assert getattr(rnn, f"weight_hh_l{layer}").shape == (gates * 8, 8)
        assert getattr(rnn, f"bias_ih_l{layer}").shape == getattr(rnn, f"bias_hh_l{layer}").shape == (gates * 8,)
    with torch.no_grad():
        y = pruned(X)
    assert y.shape == (3, 5)
    assert model.rnn.hidden_size == 16  # the given model is untouched

    ort = pytest.importorskip("onnxruntime")
    from autocompress.export import export_onnx

    path = export_onnx(pruned, tmp_path / "p.onnx", X[:1])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": X.numpy()})[0], y.numpy(), atol=1e-5)


def _silence(m: nn.Module, units: list[int]) -> None:
    """Zero every weight of `units` in every layer (rows of each gate, recurrent and next-layer columns):
    a silenced unit stays at exactly 0 and contributes nothing downstream."""
    gates, hidden = GATES[type(m)], m.hidden_size
    rows = [u + k * hidden for k in range(gates) for u in units]
    with torch.no_grad():
        for layer in range(m.num_layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(m, f"{name}_l{layer}")[rows] = 0
            getattr(m, f"weight_hh_l{layer}")[:, units] = 0
            if layer > 0:
                getattr(m, f"weight_ih_l{layer}")[:, units] = 0


@pytest.mark.parametrize(
    "cls, kw", [(nn.LSTM, {}), (nn.GRU, {"num_layers": 2}), (nn.LSTM, {"stacked": True}), (nn.RNN, {"stacked": True})]
)
def test_removing_silenced_units_keeps_the_outputs_exactly(cls, kw):
    """The kept units compute the same values after pruning: the gate rows and columns are sliced right."""
    model = _net(cls, **kw)
    silenced = [1, 5, 11]
    _silence(model.rnn, silenced)
    reader = model.rnn2 if model.rnn2 is not None else model.fc
    with torch.no_grad():
        (reader.weight_ih_l0 if reader is model.rnn2 else reader.weight)[:, silenced] = 0
        y = model(X)
    pruner = Pruner(model, X[:1])
    assert set(np.flatnonzero(pruner.channel_scores("rnn") == 0)) == set(silenced)
    pruned = pruner.prune_kept({"rnn": 13})
    assert pruned.rnn.hidden_size == 13
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), y, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(pruner.prune({g.name: 0.0 for g in pruner.groups})(X), y, atol=0, rtol=0)


@pytest.mark.parametrize("cls, kw", [(nn.LSTM, {"num_layers": 2}), (nn.GRU, {"stacked": True}), (nn.RNN, {})])
def test_cost_model_equals_an_independent_count(cls, kw):
    model = _net(cls, **kw)
    pruner = Pruner(model, X[:1])
    for ratio in (0.0, 0.25, 0.5, 0.8):
        ratios = {g.name: ratio for g in pruner.groups}
        kept = pruner.kept_channels(ratios)
        pruned = pruner.prune(ratios)
        ours = (pruner.cost_model.macs(kept), pruner.cost_model.params(kept))
        assert ours == _hand_count(pruned, steps=T) == count_macs_params(pruned, X[:1]), ratio


@pytest.mark.parametrize("cls, kw", [(nn.LSTM, {"num_layers": 2}), (nn.GRU, {"stacked": True})])
def test_matmul_macs_equal_pytorchs_flop_counter(cls, kw):
    from autocompress.measure.flops import flop_counter_macs

    pruner = Pruner(_net(cls, **kw), X[:1])
    kept = pruner.kept_channels({g.name: 0.5 for g in pruner.groups})
    assert pruner.cost_model.matmul_macs(kept) == flop_counter_macs(pruner.prune_kept(kept), X[:1])
    assert torch.backends.mkldnn.enabled  # the counter turns oneDNN's fused kernel off only while it counts


class _ConvGRU(nn.Module):
    """A Conv1d front end over the rows feeds a GRU (its input columns follow the conv's channels), then a
    ReLU on the sequence (channels last) and the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(F, 16, 3, padding=1)
        self.rnn = nn.GRU(16, 16, batch_first=True)
        self.act = nn.ReLU()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.relu(self.conv(x.flatten(1, 2).transpose(1, 2))).transpose(1, 2)
        return self.fc(self.act(self.rnn(feats)[0])[:, -1])


def test_a_conv_producer_prunes_the_recurrent_layers_input_and_costs_match():
    model = _ConvGRU().eval()
    pruner = Pruner(model, X[:1])
    assert [(g.name, g.kind, g.members) for g in pruner.groups] == [("conv", "conv", ("conv", "rnn")),
                                                                      ("rnn", "recurrent", ("rnn", "fc"))]
    specs = {s.name: s for s in pruner.layer_specs}
    assert (specs["rnn"].in_group, specs["rnn"].out_group, specs["act"].out_group) == ("conv", "rnn", "rnn")
    ratios = {"conv": 0.5, "rnn": 0.25}
    kept = pruner.kept_channels(ratios)
    pruned = pruner.prune(ratios)
    assert pruned.rnn.input_size == 8 and pruned.rnn.hidden_size == 12 and pruned(X).shape == (3, 5)
    assert (pruner.cost_model.macs(kept), pruner.cost_model.params(kept)) == count_macs_params(pruned, X[:1])


def test_zoo_model_closed_form_and_uniform_half_of_the_macs():
    from autocompress.models import get_model
    from autocompress.pruning.uniform import bisect_uniform_ratio

    model = get_model("lstm_seq_fmnist", num_classes=10, in_channels=1).eval()
    x = torch.randn(1, 1, 28, 28)
    assert model(x).shape == (1, 10)
    pruner = Pruner(model, x)
    assert [(g.name, g.kind, g.channels) for g in pruner.groups] == [("lstm1", "recurrent", 128),
                                                                       ("lstm2", "recurrent", 128)]
    cost = pruner.cost_model

    def lstm(inputs: int, hidden: int) -> int:  # per step: 4 gates x (input + recurrent) matmuls, 2 biases, 10 ops
        return 4 * hidden * (inputs + hidden) + 2 * 4 * hidden + 10 * hidden

    for k1, k2 in ((128, 128), (64, 96), (8, 120)):
        assert cost.macs({"lstm1": k1, "lstm2": k2}) == 28 * (lstm(28, k1) + lstm(k1, k2)) + 10 * k2 + 10
    ratio = bisect_uniform_ratio(
        lambda r: cost.macs(pruner.kept_channels({"lstm1": r, "lstm2": r})) / cost.base_macs, 0.5, 0.95, what="macs"
    )
    ratios = {"lstm1": ratio, "lstm2": ratio}
    macs = cost.macs(pruner.kept_channels(ratios))
    assert 0.45 <= macs / cost.base_macs <= 0.55
    pruned = pruner.prune(ratios)
    assert count_macs_params(pruned, x)[0] == macs and pruned(x).shape == (1, 10)


def test_features_and_every_criterion_work_on_recurrent_groups():
    from autocompress.envs.features import STATIC_NAMES, static_features

    model = _net(nn.LSTM, stacked=True)
    for criterion in CRITERIA:
        pruner = Pruner(model, X[:1], PruneConfig(criterion=criterion))
        assert pruner.prune({"rnn": 0.5, "rnn2": 0.25})(X).shape == (3, 5)
    rows = static_features(pruner.groups, dict(model.named_modules()))
    assert rows.shape == (2, len(STATIC_NAMES)) and np.isfinite(rows).all()
    assert (rows[:, STATIC_NAMES.index("kind")] == 0.25).all()
    assert (rows[:, STATIC_NAMES.index("weight_l1")] > 0).all()


def test_env_episode_on_a_recurrent_network_meets_the_budget():
    from autocompress.envs import EnvData, NetCompressEnv

    g = torch.Generator().manual_seed(0)
    data = EnvData(val_images=torch.randn(16, 1, T, F, generator=g), val_labels=torch.randint(0, 5, (16,), generator=g),
                   calib_images=torch.randn(16, 1, T, F, generator=g))
    env = NetCompressEnv(_net(nn.GRU, stacked=True), data, EnvConfig(budget=0.5), model_name="seqnet")
    env.reset(seed=0)
    terminated, info = False, {}
    while not terminated:
        _, _, terminated, _, info = env.step(np.array([0.1], dtype=np.float32))
    assert set(info["schedule"]) == {"rnn", "rnn2"} and info["macs_ratio"] <= 0.5 + 1e-9


class _Bidirectional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(F, 8, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x.flatten(1, 2))[0][:, -1])


class _Projected(SeqNet):
    def __init__(self) -> None:
        super().__init__(nn.LSTM)
        self.rnn = nn.LSTM(F, 16, batch_first=True, proj_size=8)


class _Cell(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(F, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 16)
        for row in x.flatten(1, 2).unbind(1):
            h = self.cell(row, h)
        return self.fc(h)


class _InitialState(SeqNet):
    def __init__(self) -> None:
        super().__init__(nn.GRU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.flatten(1, 2), torch.zeros(1, x.shape[0], 16))
        return self.fc(out[:, -1])


class _Packed(SeqNet):
    def __init__(self) -> None:
        super().__init__(nn.LSTM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = nn.utils.rnn.pack_padded_sequence(x.flatten(1, 2), [T] * x.shape[0], batch_first=True)
        _, (h, _) = self.rnn(seq)
        return self.fc(h[-1])


class _Flattened(SeqNet):
    def __init__(self) -> None:
        super().__init__(nn.LSTM)
        self.fc = nn.Linear(T * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x.flatten(1, 2))[0].flatten(1))


@pytest.mark.parametrize(
    "build, match",
    [
        (_Bidirectional, r"layer 'rnn' \(LSTM\) is not supported: bidirectional"),
        (_Projected, r"layer 'rnn' \(LSTM\) is not supported: LSTMs with proj_size"),
        (_Cell, r"layer 'cell' \(GRUCell\) is not supported: recurrent cells"),
        (_InitialState, r"layer 'rnn' \(GRU\) is given an initial state"),
        (_Packed, r"layer 'rnn' \(LSTM\) is not supported: it reads a PackedSequence"),
        (_Flattened, r"layer 'fc' reads the hidden units of 'rnn' through a reshape"),
    ],
)
def test_unsupported_recurrent_variants_fail_with_one_line_naming_the_layer(build, match):
    with pytest.raises(PruneError, match=match) as exc:
        Pruner(build().eval(), X[:1])
    assert isinstance(exc.value, AutocompressError) and "\n" not in str(exc.value)


def test_cli_uniform_schedule_apply_and_reload_the_zoo_lstm(capsys, tmp_path):
    import json

    from autocompress.cli import main
    from autocompress.export import load_pruned

    shape = ["--model", "lstm_seq_fmnist", "--input-shape", "1,28,28", "--json"]
    assert main(["schedule", "uniform", *shape, "--flops", "0.5", "--out", str(tmp_path / "s.json")]) == 0
    assert 0.45 <= json.loads(capsys.readouterr().out)["macs_ratio"] <= 0.5
    assert main(["apply", *shape, "--schedule", str(tmp_path / "s.json"), "--out", str(tmp_path / "p.pt")]) == 0
    assert 0.45 <= json.loads(capsys.readouterr().out)["macs_ratio"] <= 0.5
    pruned, schedule = load_pruned(tmp_path / "p.pt")
    assert pruned.lstm1.hidden_size == schedule.kept_channels()["lstm1"] < 128
    assert pruned(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_latency_table_refuses_recurrent_layers_it_cannot_time():
    from autocompress.config import LatencyConfig
    from autocompress.measure.lut import LatencyLUT, LUTError

    pruner = Pruner(_net(nn.LSTM), X[:1])
    with pytest.raises(LUTError, match=r"layer 'rnn' is recurrent"):
        LatencyLUT.build(pruner.layer_specs, (1, T, F), LatencyConfig(), progress=False)
