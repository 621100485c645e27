"""Image models: load a CLIP (Hugging Face id or local folder) or the baseline, and run it.

A model reference is what the user typed after ``--model``:
  * ``baseline`` — the weight-free descriptor of ``tasks/embed/baseline.py``;
  * a local folder (absolute, relative or ``~``) holding ``config.json``, the weights and
    ``preprocessor_config.json`` — stored in the lake as its absolute path;
  * otherwise a Hugging Face id (``geolocal/StreetCLIP``), read from the Hugging Face cache or
    hub (``HF_HOME``, ``HF_HUB_OFFLINE`` are honoured by ``from_pretrained``) — stored as given.
    Offline (``HF_HUB_OFFLINE`` set, or the hub does not answer one quick request) a cached
    model loads from the cache without a request, and an uncached one fails at once instead of
    after the hub client's retries (about 30 s).
The *revision* says which weights made a vector: the hub commit hash, a fingerprint of a
folder's files (``folder-<sha256 prefix>``), or the baseline's version.

An ``Embedder`` has two halves so the embed step can overlap them: ``prepare`` (thread-safe,
runs in worker threads: image -> model input) and ``embed`` (the model: a stacked batch ->
L2-normalised float32 vectors). Models are loaded where they run and cached per process;
they are never pickled.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from svcluster.tasks.embed import baseline
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.embed.precision import make_runner, resolve_precision, runtime_for
from svcluster.tasks.embed.preprocess import PreprocessSpec, preprocess_image


log = logging.getLogger(__name__)

DEFAULT_MODEL = "geolocal/StreetCLIP"  # the one default image model: embed's, and what cluster prefers

DEVICES = ("auto", "cpu", "cuda", "mps")
FINGERPRINT_BYTES = 1 << 20
HUB_PROBE_SECONDS = 5.0  # one request, no retries: long enough for a slow link, short next to ~30 s of retries
_TRUE = ("1", "true", "yes", "on")


class Embedder(Protocol):
    """An image model ready to run: see the module docstring."""

    model: str  # the key stored in the lake
    revision: str
    precision: str
    device: str
    runtime: str  # torch | onnxruntime | numpy (baseline)
    dim: int

    def prepare(self, img: Image.Image) -> np.ndarray: ...

    def embed(self, batch: np.ndarray) -> np.ndarray: ...


def is_baseline(ref: str) -> bool:
    return ref.strip().lower() == baseline.BASELINE_MODEL


def local_folder(ref: str) -> Path | None:
    """The folder ``ref`` names, if it names one that exists (else None: a hub id)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    return None


def looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", ".\\")) or ref.count("/") > 1 or "\\" in ref


def model_key(ref: str) -> str:
    """How a model reference is stored in the lake's ``model`` columns (see module docstring)."""
    if is_baseline(ref):
        return baseline.BASELINE_MODEL
    folder = local_folder(ref)
    return str(folder) if folder is not None else ref


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must be available."""
    if device not in DEVICES:
        raise SvclusterError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    import torch

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device == "cuda" and not cuda:
        raise SvclusterError("--device cuda: no CUDA GPU is available to torch here")
    if device == "mps" and not mps:
        raise SvclusterError("--device mps: Apple's Metal backend is not available here")
    return device


def folder_fingerprint(folder: Path) -> str:
    """A revision for a local model folder: hash of each file's name, size, first and last MiB."""
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)):
        size = f.stat().st_size
        digest.update(f"{f.relative_to(folder).as_posix()}\0{size}\0".encode())
        with open(f, "rb") as fh:
            digest.update(fh.read(FINGERPRINT_BYTES))
            if size > 2 * FINGERPRINT_BYTES:
                fh.seek(-FINGERPRINT_BYTES, os.SEEK_END)
                digest.update(fh.read())
    return "folder-" + digest.hexdigest()[:16]


def model_revision(ref: str) -> str:
    """The revision vectors of ``ref`` are stored with, without loading the model: the baseline's
    version, a folder's fingerprint, or the hub commit of the cached snapshot."""
    if is_baseline(ref):
        return baseline.BASELINE_REVISION
    folder = local_folder(ref)
    return folder_fingerprint(folder) if folder is not None else hub_revision(ref)


def hub_revision(repo_id: str) -> str:
    """The commit hash of a hub model's cached snapshot (``unknown`` if the cache hides it)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid hub id (a missing folder, a typo): loading will say so
        return "unknown"
    if isinstance(found, str):
        m = re.search(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]", found)
        if m:
            return m.group(1)
    return "unknown"


def hf_offline_mode() -> bool:
    """Hugging Face's own offline switch: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set,
    as ``huggingface_hub.is_offline_mode`` reads it, or set in the environment since."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return True
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_offline_reason() -> str | None:
    """Why the Hugging Face hub cannot be asked now, or None when it answers: offline mode is
    on, or one request to the hub (no retries, ``HUB_PROBE_SECONDS``) cannot connect. Any HTTP
    answer, even an error status, means the hub is reachable."""
    from huggingface_hub import constants, get_session

    if hf_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(f"{constants.ENDPOINT}/api/models", timeout=HUB_PROBE_SECONDS)
    except Exception as exc:  # DNS, refused, timeout, proxy: all mean no hub from here
        return f"no connection to the Hugging Face hub at {constants.ENDPOINT} ({first_line(exc)})"
    return None


def hub_cached(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of ``repo_id`` (its config.json)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # not a valid hub id: loading says so
        return False


def hub_load_options(ref: str) -> dict[str, Any]:
    """``from_pretrained`` options for a hub id: from the cache only when the hub cannot be
    asked; a missing model then fails at once (NotFoundError), not after the client's retries."""
    reason = hub_offline_reason()
    if reason is None:
        return {}
    if not hub_cached(ref):
        raise missing_model_error(ref, reason)
    return {"local_files_only": True}


def missing_model_error(ref: str, reason: str) -> NotFoundError:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    offline = " (HF_HUB_OFFLINE is set)" if hf_offline_mode() and "HF_HUB_OFFLINE" not in reason else ""
    return NotFoundError(
        f"model {ref!r} could not be loaded: {reason}. It is not in the Hugging Face cache under "
        f"HF_HOME={hf_home} and the hub could not supply it{offline}. Download it on a machine with "
        f"internet with `hf download {ref}` (older clients: `huggingface-cli download {ref}`) and copy "
        "the cache, or pass --model /path/to/folder with config.json, the weights and "
        "preprocessor_config.json, or use --model baseline (no weights)"
    )


@contextlib.contextmanager
def quiet_transformers():
    """Silence load reports and the torchvision notice while loading (errors still raise)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_clip_parts(ref: str) -> tuple[Any, Any, str, str]:
    """(CLIPModel, CLIPImageProcessor, stored model key, revision) for a reference."""
    from transformers import CLIPImageProcessor, CLIPModel

    folder = local_folder(ref)
    if folder is None and looks_like_path(ref):
        raise NotFoundError(f"model folder {ref!r} does not exist; pass a folder with config.json and the weights, or a Hugging Face id")
    source = str(folder) if folder is not None else ref
    hub = {} if folder is not None else hub_load_options(ref)
    try:
        with quiet_transformers():
            model = CLIPModel.from_pretrained(source, **hub)
    except (OSError, ValueError) as exc:
        if folder is not None:
            raise SvclusterError(f"model folder {folder}: not a CLIP model ({first_line(exc)})") from None
        raise missing_model_error(ref, first_line(exc)) from None
    except Exception as exc:  # hub client errors vary by version; all mean "not available"
        if folder is not None:
            raise SvclusterError(f"model folder {folder}: cannot load it ({first_line(exc)})") from None
        raise missing_model_error(ref, first_line(exc)) from None
    try:
        with quiet_transformers():
            processor = CLIPImageProcessor.from_pretrained(source, **hub)
    except Exception as exc:
        raise SvclusterError(f"model {ref!r}: no usable preprocessor_config.json ({first_line(exc)})") from None
    return model, processor, model_key(ref), model_revision(ref)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class BaselineEmbedder:
    """The weight-free descriptor: all work happens in ``prepare`` (worker threads)."""

    model = baseline.BASELINE_MODEL
    revision = baseline.BASELINE_REVISION
    precision = "fp32"
    device = "cpu"
    runtime = "numpy"
    dim = baseline.DIM

    def prepare(self, img: Image.Image) -> np.ndarray:
        return baseline.describe_image(img)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalise(batch.astype(np.float32, copy=False))


class ClipEmbedder:
    """A CLIP's image tower: ``embed`` returns ``get_image_features(...).pooler_output``, normalised."""

    def __init__(self, ref: str, device: str, precision: str, runtime: str = "auto"):
        model, processor, key, revision = load_clip_parts(ref)
        # Only the image tower runs here: drop the text tower (a third of StreetCLIP's weights).
        model.text_model = None
        model.text_projection = None
        self.model = key
        self.revision = revision
        self.device = device
        self.precision = precision
        self.runtime = runtime_for(precision, device, runtime)
        self.spec = PreprocessSpec.from_processor(processor)
        self.dim = int(model.config.projection_dim)
        image_hw = self.spec.output_hw or (model.config.vision_config.image_size,) * 2
        model = model.to(device).eval()
        try:
            self._run = make_runner(model, revision, precision, device, image_hw, self.runtime)
        except SvclusterError:
            raise
        except Exception as exc:  # an export the ONNX exporter cannot handle (e.g. > 2 GB)
            if not (self.runtime == "onnxruntime" and precision == "fp32" and runtime == "auto"):
                raise SvclusterError(f"model {ref!r}: cannot run {precision} with {self.runtime} ({first_line(exc)})") from None
            log.warning("ONNX export of %s failed (%s); running fp32 in torch", ref, first_line(exc))
            self.runtime = "torch"
            self._run = make_runner(model, revision, precision, device, image_hw, "torch")

    def prepare(self, img: Image.Image) -> np.ndarray:
        return preprocess_image(img, self.spec)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalise(self._run(batch))


def l2_normalise(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1.0)).astype(np.float32)


@dataclass(frozen=True)
class ModelChoice:
    """A model reference with device and precision resolved: what the lake key is made of."""

    ref: str
    model: str
    device: str
    precision: str


def choose_model(ref: str, device: str = "auto", precision: str = "auto") -> ModelChoice:
    """Resolve device and precision for a model without loading it."""
    if device not in DEVICES:
        raise SvclusterError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if is_baseline(ref):
        return ModelChoice(ref, baseline.BASELINE_MODEL, "cpu", resolve_precision(precision, "cpu", baseline=True))
    dev = resolve_device(device)
    return ModelChoice(ref, model_key(ref), dev, resolve_precision(precision, dev))


@functools.lru_cache(maxsize=4)
def load_embedder(ref: str, device: str = "auto", precision: str = "auto", runtime: str = "auto") -> Embedder:
    """The model ``ref`` ready to embed on ``device`` at ``precision``; cached per process.

    ``runtime`` forces ``torch`` or ``onnxruntime`` (default: see ``svcluster.tasks.embed.precision``).
    """
    choice = choose_model(ref, device, precision)
    if is_baseline(ref):
        return BaselineEmbedder()
    log.info("loading %s on %s (%s)", ref, choice.device, choice.precision)
    return ClipEmbedder(ref, choice.device, choice.precision, runtime)


@functools.lru_cache(maxsize=2)
def _load_text_model(ref: str) -> tuple[Any, Any] | None:
    from transformers import AutoTokenizer

    model, _, _, _ = load_clip_parts(ref)
    folder = local_folder(ref)
    hub = {} if folder is not None else hub_load_options(ref)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(folder) if folder is not None else ref, **hub)
    except Exception as exc:
        log.warning("model %s has no usable tokenizer (%s): no text features", ref, first_line(exc))
        return None
    return model.eval(), tokenizer


def text_features(model_ref: str, prompts: list[str]) -> np.ndarray | None:
    """L2-normalised text embeddings ``(len(prompts), dim)`` in the image embedding space.

    None when the model has no text tower (``baseline``) or no tokenizer. Used to name clusters
    by the prompts closest to their centroids.
    """
    if is_baseline(model_ref) or not prompts:
        return None
    loaded = _load_text_model(model_ref)
    if loaded is None:
        return None
    model, tokenizer = loaded
    import torch

    max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))
    tokens = tokenizer(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    with torch.inference_mode():
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        out = getattr(out, "pooler_output", out)
    return l2_normalise(out.float().numpy())
