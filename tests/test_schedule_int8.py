"""Schedules with per-layer INT8: the version-2 format, and deploying one (search finalize, `apply`,
`latency --pruned x.int8.onnx`) as an ONNX Runtime static-INT8 model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from prune_models import TinyResNet, randomize_bn

from autocompress.cli import main
from autocompress.pruning import Pruner, Schedule, ScheduleError
from autocompress.quantize import layer_precision

X = torch.randn(2, 3, 32, 32)


def _block(layers: dict[str, str], **over) -> dict:
    return {"layers": layers, "calib_images": 32, "per_channel": True, "calibration": "minmax", **over}


@pytest.fixture(scope="module")
def made():
    torch.manual_seed(0)
    pruner = Pruner(randomize_bn(TinyResNet()), X)
    ratios = {g.name: 0.25 for g in pruner.groups}
    groups = {g.name: ("int8" if i % 2 else "fp32") for i, g in enumerate(pruner.groups)}
    layers = layer_precision(pruner.layer_specs, groups, other="fp32")
    schedule = Schedule.from_pruner(pruner, ratios, "tiny_resnet", metrics={"top1": 90.0},
                                    quantization=_block(layers))
    return pruner, ratios, schedule


def test_version_1_file_without_quantization_still_loads(made):
    pruner, ratios, schedule = made
    data = json.loads(schedule.to_json())
    data.pop("quantization")
    data["version"] = 1
    loaded = Schedule.from_json(json.dumps(data))
    assert loaded.quantization is None and not loaded.quantized and loaded.layer_precision() == {}
    assert loaded.kept_channels() == pruner.kept_channels(ratios)


def test_quantized_schedule_round_trips(made, tmp_path):
    _, _, schedule = made
    assert schedule.quantized and set(schedule.layer_precision().values()) == {"fp32", "int8"}
    path = schedule.save(tmp_path / "s.json")
    loaded = Schedule.load(path)
    assert loaded == schedule
    assert loaded.to_json() == schedule.to_json() == Schedule.from_json(loaded.to_json()).to_json()
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["quantization"] == schedule.quantization


def _edited(schedule: Schedule, edit) -> str:
    data = json.loads(schedule.to_json())  # a copy: to_dict shares the block with the schedule
    edit(data)
    return json.dumps(data)


def _first_layer(d: dict) -> str:
    return next(iter(d["quantization"]["layers"]))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["quantization"]["layers"].update({_first_layer(d): "int4"}),
         r"quantization\.layers: conv1 have a precision other than"),
        (lambda d: d["quantization"].pop("calibration"), r"quantization must be an object with the keys"),
        (lambda d: d["quantization"].pop("layers"), r"with the keys \['calib_images', 'calibration'"),
        (lambda d: d["quantization"].update(calib_images=0), r"calib_images must be an integer in \[1, 100000\], got 0"),
        (lambda d: d["quantization"].update(calib_images=True), "calib_images must be an integer .* got True"),
        (lambda d: d["quantization"].update(calib_images="many"), "calib_images must be an integer .* got 'many'"),
        (lambda d: d["quantization"].update(per_channel="yes"), "per_channel must be true or false"),
        (lambda d: d["quantization"].update(calibration="mse"), "calibration must be one of minmax, entropy"),
        (lambda d: d["quantization"].update(layers=["conv1"]), "layers must map layer names to"),
        (lambda d: d.update(version=1), r"'quantization' needs schedule version 2; set \"version\": 2"),
    ],
)
def test_malformed_quantization_blocks_raise_clear_errors(made, edit, match):
    with pytest.raises(ScheduleError, match=match) as info:
        Schedule.from_json(_edited(made[2], edit), "s.json")
    assert str(info.value).startswith("s.json: ") and "\n" not in str(info.value)


def test_a_block_with_every_layer_fp32_loads_as_no_quantization(made):
    _, _, schedule = made
    text = _edited(schedule, lambda d: d["quantization"].update(
        layers=dict.fromkeys(d["quantization"]["layers"], "fp32")))
    loaded = Schedule.from_json(text)
    assert loaded.quantization is None and not loaded.quantized
    assert "quantization" not in loaded.to_dict()


# --- deployment -------------------------------------------------------------------------------------------

INT8_LAYERS = ("conv2", "conv3", "conv4")
FP32_LAYERS = ("conv1", "fc")


def _conv_inputs(blob: bytes) -> dict[str, list[str]]:
    """Conv/Gemm node's layer -> op types producing its inputs ("plain" for an initializer or the graph input)."""
    import onnx

    from autocompress.quantize import module_of_node

    graph = onnx.load_from_string(blob).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return {module_of_node(n.name): [producer.get(i, "plain") for i in n.input if i]
            for n in graph.node if n.op_type in ("Conv", "Gemm")}


@pytest.fixture(scope="module")
def int8_schedule(tmp_path_factory):
    """A uniform schedule for tiny_cnn on the digits, with conv2-4 in INT8 and conv1 / fc in FP32."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("int8")
    path = folder / "s.json"
    assert main(["schedule", "uniform", "--model", "tiny_cnn", "--data", "digits", "--flops", "0.6",
                 "--out", str(path)]) == 0
    schedule = Schedule.load(path)
    layers = {**dict.fromkeys(INT8_LAYERS, "int8"), **dict.fromkeys(FP32_LAYERS, "fp32")}
    replace(schedule, quantization=_block(layers, calib_images=64)).save(path)
    return folder, path


@pytest.fixture(scope="module")
def applied(int8_schedule):
    folder, sched = int8_schedule
    out = folder / "p.pt"
    assert main(["apply", "--model", "tiny_cnn", "--data", "digits", "--schedule", str(sched), "--out", str(out),
                 "--json"]) == 0
    return out


def test_apply_writes_an_int8_export_that_matches_the_fp32_pruned_model(applied, capsys):
    from autocompress.config import DataConfig
    from autocompress.data import load_data, take_tensors
    from autocompress.export import load_pruned
    from autocompress.quantize import OrtModule

    capsys.readouterr()
    export = applied.with_name("p.int8.onnx")
    assert export.is_file() and not list(applied.parent.glob(".*.tmp"))
    pruned, schedule = load_pruned(applied)
    assert schedule.quantized
    images, _ = take_tensors(load_data(DataConfig(name="digits", val_size=0)).test, 200, seed=0)
    with torch.no_grad():
        ref = pruned(images)
    out = OrtModule(export.read_bytes())(images)
    assert float((out - ref).norm() / ref.norm()) < 0.1
    inputs = _conv_inputs(export.read_bytes())
    assert set(inputs) == {*INT8_LAYERS, *FP32_LAYERS}
    for name in INT8_LAYERS:  # activation and weight both come through a quantize/dequantize pair
        assert inputs[name][:2] == ["DequantizeLinear", "DequantizeLinear"], (name, inputs[name])
    for name in FP32_LAYERS:  # FP32 weights; fc may read a dequantized activation, but runs in FP32
        assert inputs[name][1:] == ["plain"] * (len(inputs[name]) - 1), (name, inputs[name])
    assert inputs["conv1"] == ["plain"] * len(inputs["conv1"])  # the graph input, unquantized
    ops = [n.op_type for n in __import__("onnx").load_from_string(export.read_bytes()).graph.node]
    assert ops.count("QuantizeLinear") >= len(INT8_LAYERS) - 1  # conv3 and conv4 may share one quantized input


def test_quantize_of_the_pruned_file_follows_its_schedule(applied, capsys):
    out = applied.with_name("q.onnx")
    assert main(["quantize", "--pruned", str(applied), "--data", "digits", "--rounds", "2", "--json",
                 "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["keep_fp32"] == sorted(FP32_LAYERS)
    assert out.read_bytes() == applied.with_name("p.int8.onnx").read_bytes()  # same images, same settings


def test_apply_without_data_says_how_to_make_the_int8_export(int8_schedule, capsys):
    folder, sched = int8_schedule
    out = folder / "nodata.pt"
    assert main(["apply", "--model", "tiny_cnn", "--input-shape", "1,16,16", "--schedule", str(sched),
                 "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["int8_onnx"] is None
    note = captured.err.strip()
    assert "\n" not in note and f"autocompress quantize --pruned {out} --data DATASET" in note
    assert out.is_file() and not out.with_name("nodata.int8.onnx").exists()


def test_latency_times_the_int8_export_against_the_fp32_original(applied, capsys):
    capsys.readouterr()
    export = str(applied.with_name("p.int8.onnx"))
    assert main(["latency", "--pruned", export, "--rounds", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "speedup" in out and "onnxruntime" in out
    assert main(["latency", "--pruned", str(applied), "--rounds", "3", "--warmup", "1", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["int8"] and result["runtime"] == "onnxruntime" and result["speedup"] > 0
    assert result["model"] == "tiny_cnn" and "timing the export beside it" in captured.err
    alone = applied.with_name("alone.onnx")  # no pruned file beside it: the original comes from --model
    alone.write_bytes(applied.with_name("p.int8.onnx").read_bytes())
    assert main(["latency", "--pruned", str(alone), "--rounds", "2"]) == 2
    assert "give --model NAME (the FP32 original" in capsys.readouterr().err
    assert main(["latency", "--pruned", str(alone), "--model", "tiny_cnn", "--rounds", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["speedup"] > 0  # input shape (1, 16, 16) read from the graph
    alone.write_bytes(b"not a network")
    assert main(["latency", "--pruned", str(alone), "--model", "tiny_cnn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "alone.onnx" in err


def test_latency_of_a_quantized_pruned_file_without_its_export_asks_for_the_onnx(int8_schedule, capsys):
    folder, sched = int8_schedule
    out = folder / "lonely.pt"
    assert main(["apply", "--model", "tiny_cnn", "--input-shape", "1,16,16", "--schedule", str(sched),
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["latency", "--pruned", str(out), "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pass the .onnx export" in err and "lonely.int8.onnx" in err


def test_finalize_fine_tunes_in_fp32_then_quantizes(tmp_path):
    pytest.importorskip("onnxruntime")
    from test_search import small_config

    from autocompress.config import TrainConfig
    from autocompress.pipeline import build, finalize, summary_table
    from autocompress.search import BEST_SCHEDULE, SearchResult

    cfg = small_config(tmp_path / "run", "random", episodes=1)
    cfg = replace(cfg, finetune=TrainConfig(epochs=1, max_batches=3, device="cpu"),
                  env=replace(cfg.env, latency=replace(cfg.env.latency, rounds=3, warmup=1)))
    env, bundle = build(cfg, progress=False)
    pruner = env.pruner
    groups = {g.name: ("fp32" if i == 0 else "int8") for i, g in enumerate(pruner.groups)}
    layers = layer_precision(pruner.layer_specs, groups, other="fp32")
    run_dir = tmp_path / "run"
    Schedule.from_pruner(pruner, {g.name: 0.25 for g in pruner.groups}, "tiny_cnn",
                         quantization=_block(layers)).save(run_dir / BEST_SCHEDULE)
    summary = finalize(cfg, env, bundle, SearchResult(run_dir, 1, {}, run_dir / BEST_SCHEDULE), progress=False)
    q = summary["int8"]
    assert q["recipe"] == "fp32 fine-tune, then post-training static INT8 calibration"
    assert q["fp32_top1"] == summary["pruned"]["top1"] and 0 <= q["top1"] <= 100
    assert q["int8_layers"] == sum(p == "int8" for p in layers.values()) and q["calib_images"] == 32
    export = run_dir / "pruned_model.int8.onnx"
    assert summary["artefacts"]["int8_onnx"] == q["onnx"] == str(export) and export.stat().st_size == q["bytes"]
    assert q["speedup"] > 0 and not list(run_dir.glob(".*.tmp"))
    assert "INT8 test top-1" in summary_table(summary)


def test_reduce_range_is_recorded_as_version_5_and_read_back(made, tmp_path):
    pruner, ratios, schedule = made
    reduced = Schedule.from_pruner(pruner, ratios, "tiny_resnet",
                                   quantization=_block(schedule.layer_precision(), reduce_range=True))
    data = json.loads(Schedule.load(reduced.save(tmp_path / "r.json")).to_json())
    assert data["version"] == 5 and data["quantization"]["reduce_range"] is True
    plain = Schedule.from_pruner(pruner, ratios, "tiny_resnet",
                                 quantization=_block(schedule.layer_precision(), reduce_range=False))
    assert plain.version == 2 and "reduce_range" not in plain.quantization  # 8-bit weights: nothing new to say

    from autocompress.export import quant_config

    assert quant_config(reduced).reduce_range is True and quant_config(plain).reduce_range is False


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["quantization"].update(reduce_range=True), r"reduce_range needs schedule version 5; set \"version\": 5"),
    (lambda d: d.update(version=5) or d["quantization"].update(reduce_range="yes"), "reduce_range must be true or false"),
    (lambda d: d.update(version=5) or d["quantization"].update(bits=7), r"and optionally \['reduce_range'\]"),
])
def test_malformed_reduce_range_raises_clear_errors(made, edit, match):
    with pytest.raises(ScheduleError, match=match) as info:
        Schedule.from_json(_edited(made[2], edit), "s.json")
    assert str(info.value).startswith("s.json: ") and "\n" not in str(info.value)
