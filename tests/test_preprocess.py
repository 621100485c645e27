"""Our fast preprocessing gives what the model's own CLIPImageProcessor gives (within 1e-3)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.embed.preprocess import PreprocessSpec, decode_image, preprocess_image, stitch_views


def varied_images() -> list[tuple[str, Image.Image]]:
    rng = np.random.default_rng(7)

    def noise(w: int, h: int, c: int) -> np.ndarray:
        base = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        return np.clip(base * 0.5 + ramp * 0.5, 0, 255).astype(np.uint8)

    rgba = noise(300, 200, 4)
    rgba[..., 3] = rng.integers(0, 256, (200, 300), dtype=np.uint8)  # real transparency
    jpeg = io.BytesIO()
    Image.fromarray(noise(640, 640, 3)).save(jpeg, format="JPEG", quality=85)
    palette = Image.fromarray(noise(123, 321, 3)).convert("P", palette=Image.Palette.ADAPTIVE)
    return [
        ("square jpeg 640", Image.open(io.BytesIO(jpeg.getvalue()))),
        ("wide rgb", Image.fromarray(noise(640, 200, 3))),
        ("tall rgb", Image.fromarray(noise(150, 500, 3))),
        ("odd sizes", Image.fromarray(noise(337, 333, 3))),
        ("small upscaled", Image.fromarray(noise(50, 70, 3))),
        ("grayscale", Image.fromarray(noise(400, 300, 1)[..., 0], mode="L")),
        ("rgba", Image.fromarray(rgba, mode="RGBA")),
        ("cmyk", Image.fromarray(noise(256, 320, 4), mode="CMYK")),
        ("palette", palette),
        ("stitched strip", stitch_views([Image.fromarray(noise(64, 64, 3)) for _ in range(4)])),
    ]


PROCESSORS = {
    "streetclip-336": CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
    "b32-224": CLIPImageProcessor(),
    "custom-mean-std": CLIPImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": 48, "width": 56}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    ),
}


@pytest.mark.parametrize("proc_name", list(PROCESSORS))
def test_matches_clip_image_processor(proc_name):
    processor = PROCESSORS[proc_name]
    spec = PreprocessSpec.from_processor(processor)
    for name, img in varied_images():
        expected = processor(images=img, return_tensors="np")["pixel_values"][0]
        ours = preprocess_image(img, spec)
        assert ours.dtype == np.float32
        assert ours.shape == expected.shape, (name, ours.shape, expected.shape)
        diff = float(np.abs(ours - expected).max())
        assert diff < 1e-3, f"{proc_name} / {name}: max difference {diff}"


def test_spec_reads_the_saved_processor_config(tiny_clip):
    spec = PreprocessSpec.from_processor(CLIPImageProcessor.from_pretrained(tiny_clip))
    assert spec.shortest_edge == 40 and spec.crop_hw == (32, 32) and spec.resample == 3
    assert spec.output_hw == (32, 32)


def test_stitch_puts_views_side_by_side_in_order():
    views = [Image.new("RGB", (10, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9))]
    strip = np.asarray(stitch_views(views))
    assert strip.shape == (8, 40, 3)
    assert tuple(strip[0, 0]) == (255, 0, 0) and tuple(strip[0, 15]) == (0, 255, 0) and tuple(strip[0, 39]) == (9, 9, 9)


def test_broken_image_bytes_name_the_item():
    with pytest.raises(SvclusterError, match="location L1 heading 90: not a JPEG") as caught:
        decode_image(b"not a jpeg", "location L1 heading 90")
    assert " at 0x" not in str(caught.value) and "<" not in str(caught.value)  # plain words, no object repr
