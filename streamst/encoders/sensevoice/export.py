"""Export SenseVoiceSmall's encoder + CTC head to ONNX, optionally int8, as FunASR exports it.

    python -m streamst.encoders.sensevoice.export            # the pulled sensevoice-small
    python -m streamst.encoders.sensevoice.export DIR --int8 # also model_quant.onnx

Uses FunASR's own export wrapper (`SenseVoiceSmall.export`: language and text-norm ids as
inputs, raw CTC logits as output) with the legacy TorchScript exporter at opset 14, the
settings FunASR uses; int8 is onnxruntime's dynamic quantisation of the MatMul weights with
FunASR's settings. Needs PyTorch, FunASR and onnx; the result runs on onnxruntime alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from streamst.encoders.sensevoice.layout import ONNX_NAME, ONNX_QUANT_NAME, find_files, read_config
from streamst.encoders.sensevoice.tokens import TEXTNORM_QUERY_IDS, Vocabulary
from streamst.errors import ModelError, StreamstError

log = logging.getLogger("streamst.encoders.sensevoice")

OPSET = 14
MAX_SEQ_LEN = 512  # FunASR's export default (a mask helper's size; inputs stay dynamic)
DUMMY_FRAMES = (6, 30)  # two dummy utterances of different lengths, as FunASR's export uses


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    quant_path: Path | None  # None unless int8 was asked for


def export_onnx(model_dir: Path | str, output_dir: Path | str | None = None, quantize: bool = False) -> ExportResult:
    """Write model.onnx (and model_quant.onnx with `quantize`) for the SenseVoice in `model_dir`."""
    from streamst.encoders.sensevoice.torch_backend import import_funasr_model, load_model

    import_funasr_model()
    import torch

    files = find_files(model_dir)
    config = read_config(files.config)
    vocabulary = Vocabulary(files.bpe)
    out_dir = Path(output_dir) if output_dir is not None else files.directory
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(files, config, vocabulary.size, device="cpu").export(max_seq_len=MAX_SEQ_LEN, device="cpu")
    onnx_path = out_dir / ONNX_NAME
    partial = onnx_path.with_name(onnx_path.name + ".partial")
    log.info("exporting %s to %s", files.checkpoint, onnx_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                _dummy_inputs(config.frontend.feature_dim),
                str(partial),
                dynamo=False,
                do_constant_folding=True,
                opset_version=OPSET,
                input_names=model.export_input_names(),
                output_names=model.export_output_names(),
                dynamic_axes=model.export_dynamic_axes(),
            )
        os.replace(partial, onnx_path)
    except Exception as e:
        partial.unlink(missing_ok=True)
        raise ModelError(f"ONNX export of {files.checkpoint} failed: {e}") from e
    quant_path = quantize_int8(onnx_path, out_dir / ONNX_QUANT_NAME) if quantize else None
    return ExportResult(onnx_path, quant_path)


def quantize_int8(onnx_path: Path, quant_path: Path) -> Path:
    """Dynamic int8 quantisation of the MatMul weights, leaving output layers in float."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise ModelError("int8 quantisation needs onnx and onnxruntime: pip install onnx onnxruntime") from e
    names = [node.name for node in onnx.load(str(onnx_path)).graph.node]
    excluded = [n for n in names if "output" in n or "bias_encoder" in n or "bias_decoder" in n]
    partial = quant_path.with_name(quant_path.name + ".partial")
    log.info("quantising %s to %s", onnx_path.name, quant_path)
    try:
        quantize_dynamic(
            model_input=str(onnx_path),
            model_output=str(partial),
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
            nodes_to_exclude=excluded,
        )
        os.replace(partial, quant_path)
    except Exception as e:
        partial.unlink(missing_ok=True)
        raise ModelError(f"int8 quantisation of {onnx_path} failed: {e}") from e
    return quant_path


def _dummy_inputs(feature_dim: int) -> tuple:
    import torch

    n_max = max(DUMMY_FRAMES)
    generator = torch.Generator().manual_seed(0)
    speech = torch.randn(len(DUMMY_FRAMES), n_max, feature_dim, generator=generator)
    lengths = torch.tensor(DUMMY_FRAMES, dtype=torch.int32)
    language = torch.zeros(len(DUMMY_FRAMES), dtype=torch.int32)
    textnorm = torch.full((len(DUMMY_FRAMES),), TEXTNORM_QUERY_IDS["woitn"], dtype=torch.int32)
    return speech, lengths, language, textnorm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamst.encoders.sensevoice.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", nargs="?", help="a SenseVoice directory (default: the pulled sensevoice-small)")
    parser.add_argument("--output-dir", help="where to write the ONNX files (default: the model directory)")
    parser.add_argument("--int8", action="store_true", help="also write model_quant.onnx (dynamic int8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        model_dir = args.model_dir
        if model_dir is None:
            from streamst import registry

            model_dir = registry.model_path("sensevoice-small")
        result = export_onnx(model_dir, args.output_dir, quantize=args.int8)
    except StreamstError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return e.exit_code
    print(result.onnx_path)
    if result.quant_path:
        print(result.quant_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
