import re

import numpy as np
import pytest
from PIL import Image, ImageOps

from fss_demo import images

H, W = 24, 32  # the size of the small pictures the catalogues below are made of


def square_mask(height=H, width=W, top=6, left=8, side=10):
    """bool (height, width) with a side x side square of object."""
    mask = np.zeros((height, width), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def truncated_jpeg(tmp_path):
    """Path of a JPEG cut in half: PIL opens its header, and fails only when the pixels are read."""
    rng = np.random.default_rng(0)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(whole, quality=90)
    data = whole.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[:len(data) // 2])
    return path


def with_orientation(array, orientation, path):
    """Save `array` as a JPEG whose EXIF says to show it rotated."""
    picture = Image.fromarray(array)
    exif = picture.getexif()
    exif[0x0112] = orientation
    picture.save(path, exif=exif, quality=95)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Images accepted, and what they become


def test_rgba_grayscale_and_16bit_become_rgb(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    assert images.load_image(Image.fromarray(rgba, "RGBA")).shape == (20, 30, 3)
    assert images.load_image(rgba)[0, 0].tolist() == [200, 0, 0]
    gray = Image.fromarray(np.full((10, 12), 77, np.uint8), "L")
    assert images.load_image(gray)[0, 0].tolist() == [77, 77, 77]
    deep = np.full((8, 9), 65535, np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    loaded = images.load_image(str(path))
    assert loaded.dtype == np.uint8 and loaded.shape == (8, 9, 3) and loaded.max() == 255
    assert images.load_image(deep).max() == 255


def test_16bit_png_keeps_its_levels(tmp_path):
    deep = np.array([[0, 256 * 100, 65535]], np.uint16)
    path = tmp_path / "levels.png"
    Image.fromarray(deep).save(path)
    assert images.load_image(str(path))[0, :, 0].tolist() == [0, 100, 255]
    assert images.load_image(deep)[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize("array, expected", [
    (np.array([[0.0, 0.2, 1.0]], np.float32), [0, 51, 255]),  # float in [0, 1]: times 255
    (np.array([[0.0, 0.2, 1.0]], np.float64), [0, 51, 255]),
    (np.array([[0, 51, 255]], np.int32), [0, 51, 255]),  # other integers within 0..255: as they are
    (np.array([[0, 51, 255]], np.int64), [0, 51, 255]),
    (np.array([[0, 100 * 256, 65535]], np.uint16), [0, 100, 255]),  # uint16: >> 8
    (np.array([[0, 100 * 256, 65535]], ">u2"), [0, 100, 255]),  # big-endian 16-bit
    (np.array([[False, True, True]]), [0, 255, 255]),  # bool: black and white
    (np.array([[[0], [51], [255]]], np.uint8), [0, 51, 255]),  # (H, W, 1)
], ids=["float32", "float64", "int32", "int64", "uint16", "uint16-big-endian", "bool", "HxWx1"])
def test_accepted_image_arrays(array, expected):
    loaded = images.load_image(array)
    assert loaded.dtype == np.uint8 and loaded.shape == (1, 3, 3)
    assert loaded[0, :, 0].tolist() == expected and (loaded == loaded[:, :, :1]).all()


def test_transparency_becomes_white_for_arrays_and_pil_images():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    for source in (rgba, Image.fromarray(rgba, "RGBA")):
        loaded = images.load_image(source)
        assert loaded[0, 0].tolist() == [200, 0, 0] and loaded[3, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1)])  # 6: shown turned 90 degrees clockwise; 8: 270
def test_exif_rotation_is_applied(tmp_path, orientation, turns):
    stored = np.full((20, 40, 3), 30, np.uint8)
    stored[:6, :6] = 250  # a bright corner (top left as stored) tells the two rotations apart
    path = with_orientation(stored, orientation, tmp_path / f"rotated{orientation}.jpg")
    loaded = images.load_image(path)
    shown = np.rot90(stored, turns)
    assert loaded.shape == shown.shape == (40, 20, 3)
    assert np.abs(loaded.astype(int) - shown).mean() < 3
    bright = {"top left": loaded[:6, :6], "top right": loaded[:6, -6:],
              "bottom left": loaded[-6:, :6], "bottom right": loaded[-6:, -6:]}
    brightest = max(bright, key=lambda corner: bright[corner].mean())
    assert brightest == ("top right" if orientation == 6 else "bottom left")


def test_huge_images_are_shrunk():
    huge = np.zeros((3000, 5000, 3), np.uint8)
    assert max(images.load_image(huge).shape[:2]) == images.MAX_SIDE


def big_photo(height, width):
    """A smooth picture (a small random one enlarged), so that JPEG keeps it close."""
    small = np.random.default_rng(0).integers(0, 256, (height // 64, width // 64, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def as_mpo(array, path):
    """Save `array` as an MPO, the JPEG with more pictures in it that phones write (PIL opens it as format MPO)."""
    picture = Image.fromarray(array)
    picture.save(path, "MPO", save_all=True, append_images=[picture.resize((64, 32))], quality=95)
    return str(path)


@pytest.mark.parametrize("orientation, turns, save", [(1, 0, with_orientation), (6, -1, with_orientation),
                                                      (1, 0, lambda array, _, path: as_mpo(array, path))])
def test_a_jpeg_over_twice_the_largest_side_is_decoded_smaller_with_its_own_size_kept(
        tmp_path, monkeypatch, orientation, turns, save):
    stored = big_photo(2000, 4200)
    path = save(stored, orientation, tmp_path / "big.jpg")
    decoded = []  # what was shrunk to MAX_SIDE: the picture as the JPEG decoder gave it
    fit = images.fit
    monkeypatch.setattr(images, "fit", lambda array, side, **kw: decoded.append(array.shape) or fit(array, side, **kw))
    loaded, own_size = images.load_image_with_size(path)
    shown = np.rot90(stored, turns)
    assert own_size == shown.shape[:2]  # the answer comes back at the photo's own size
    assert max(decoded[0][:2]) == 2100  # decoded at half its size, still over MAX_SIDE
    expected = images.fit(np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")), images.MAX_SIDE)
    assert loaded.shape == expected.shape and np.abs(loaded.astype(int) - expected).mean() < 1


def test_a_thin_jpeg_decoded_smaller_works_at_the_size_of_the_whole_picture(tmp_path):
    """The size of a picture decoded smaller is rounded up (8240x173 at 1/4: 2060x44); it is still worked on at the
    size the whole picture gets (2048x43), so that its own mask's aspect check holds."""
    stored = big_photo(192, 8240)[:173]
    path = str(tmp_path / "strip.jpg")
    Image.fromarray(stored).save(path, quality=95)
    mask = np.zeros((173, 8240), np.uint8)
    mask[40:120, 1000:5000] = 255
    mask_path = str(tmp_path / "strip_mask.png")
    Image.fromarray(mask).save(mask_path)
    image, loaded_mask = images.load_support(path, mask_path, 1)
    assert image.shape[:2] == loaded_mask.shape == (43, 2048)


# ---------------------------------------------------------------------------------------------------------------
# Images refused: the message starts with what was read, names the problem and says what was expected


def bomb(tmp_path, monkeypatch, as_pil):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (40, 40)).save(path)
    opened = Image.open(path) if as_pil else str(path)  # opened (lazily) before the limit drops
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # so 1600 pixels are over twice the limit, like 179 MP
    return opened


def text_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    return str(path)


def empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return str(path)


def closed_pil(tmp_path):
    path = tmp_path / "closed.png"
    Image.new("RGB", (4, 4)).save(path)
    with Image.open(path) as image:
        pass
    return image


BAD_IMAGES = [
    ("float-above-1", lambda p, m: np.array([[0.0, 0.5, 1.5]]),
     r"float images must hold values in \[0, 1\]; this one spans \[0, 1\.5\]"),
    ("float-0-255", lambda p, m: np.array([[0.0, 128.0, 255.0]]), r"spans \[0, 255\] \(if it holds 0\.\.255, divide"),
    ("float-negative", lambda p, m: np.array([[-0.5, 0.5]]), r"spans \[-0\.5, 0\.5\]"),
    ("float-nan", lambda p, m: np.array([[0.0, np.nan]]), "contains NaN or infinite values"),
    ("float-inf", lambda p, m: np.array([[0.0, 0.5, np.inf]], np.float32), "contains NaN or infinite values"),
    ("int32-large", lambda p, m: np.array([[0, 1000]], np.int32),
     r"int32 values in \[0, 1000\]; int32 images must hold values in 0\.\.255: pass uint8 \(0\.\.255\) or uint16"),
    ("int64-negative", lambda p, m: np.array([[-1, 10]], np.int64), r"int64 values in \[-1, 10\]"),
    ("complex", lambda p, m: np.zeros((2, 2), complex), "type complex128; expected uint8, uint16, bool or float"),
    ("strings", lambda p, m: np.full((2, 2), "a"), "type <U1; expected uint8"),
    ("channels-first", lambda p, m: np.zeros((3, H, W), np.uint8),
     r"has shape \(3, 24, 32\); expected \(H, W\), \(H, W, 3\) or \(H, W, 4\): it looks channels-first"),
    ("two-channels", lambda p, m: np.zeros((H, W, 2), np.uint8), r"has shape \(24, 32, 2\); expected \(H, W\)"),
    ("one-dimensional", lambda p, m: np.zeros(10, np.uint8), r"has shape \(10,\); expected"),
    ("batch-of-one", lambda p, m: np.zeros((1, H, W, 3), np.uint8), r"has shape \(1, 24, 32, 3\).*batch of one"),
    ("empty-array", lambda p, m: np.zeros((0, 5, 3), np.uint8), r"is empty \(size 5x0\)"),
    ("empty-pil", lambda p, m: Image.new("RGB", (0, 0)), r"is empty \(size 0x0\)"),
    ("text-file", lambda p, m: text_file(p), "'notes.jpg' is not an image file that can be read"),
    ("zero-byte-file", lambda p, m: empty_file(p), "'empty.png' is not an image file that can be read"),
    ("missing-file", lambda p, m: str(p / "missing.jpg"), "no file at"),
    ("truncated-path", lambda p, m: str(truncated_jpeg(p)), "'truncated.jpg' is not an image file.*truncated"),
    ("truncated-pil", lambda p, m: Image.open(truncated_jpeg(p)), "the PIL image could not be read.*truncated"),
    ("closed-pil", lambda p, m: closed_pil(p), "could not be read.*already closed"),
    ("bomb-path", lambda p, m: bomb(p, m, as_pil=False), "'bomb.png' is too large to open safely"),
    ("bomb-pil", lambda p, m: bomb(p, m, as_pil=True), "the PIL image is too large to open safely"),
    ("not-an-image", lambda p, m: 12, "expected a file path, a PIL image or a numpy array, got int"),
]


@pytest.mark.parametrize("make, match", [(make, match) for _, make, match in BAD_IMAGES],
                         ids=[name for name, _, _ in BAD_IMAGES])
def test_bad_images_are_refused_with_a_reason(tmp_path, monkeypatch, make, match):
    source = make(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=match) as error:
        images.load_image(source, "support 2 image")
    assert str(error.value).startswith("support 2 image")


def test_default_name_and_exact_shape_message():
    with pytest.raises(ValueError) as error:
        images.load_image(np.zeros((3, 480, 640), np.uint8))
    assert str(error.value).startswith("image has shape (3, 480, 640); expected (H, W), (H, W, 3) or (H, W, 4)")


# ---------------------------------------------------------------------------------------------------------------
# Masks accepted, and the object they mark


def test_masks_resize_and_read_alpha():
    # deliberately changed: a mask is only resized to a size of the same aspect ratio (was stretched to any size)
    mask = np.zeros((10, 20), np.uint8)
    mask[:5] = 255
    resized = images.load_mask(mask, size=(20, 40))
    assert resized.shape == (20, 40) and resized[:10].all() and not resized[10:].any()
    painted = np.zeros((6, 6, 4), np.uint8)
    painted[2:4, 2:4, 3] = 128
    assert images.load_mask(painted).sum() == 4
    assert images.load_mask(Image.fromarray(painted, "RGBA")).sum() == 4


def rgba(colour_mask, alpha_mask=None):
    """RGBA uint8: white where colour_mask, black elsewhere; alpha 255 (opaque) unless alpha_mask is given."""
    array = np.zeros(colour_mask.shape + (4,), np.uint8)
    array[colour_mask, :3] = 255
    array[..., 3] = 255 if alpha_mask is None else alpha_mask * 255
    return array


def soft(floor=0.05, peak=0.95):
    return np.where(square_mask(), peak, floor)


def noisy_white_on_black():
    mask = square_mask().astype(np.uint8) * 250
    mask[0, :] = 3  # noise in the black (a JPEG's), ignored because the mask also holds values above 127
    mask[8, 10] = 200
    return mask


def label_map():
    labels = np.zeros((H, W), np.uint8)
    labels[square_mask(side=5)] = 1
    labels[square_mask(top=14, side=5)] = 2
    return labels


def palette(indices, colours):
    image = Image.fromarray(indices.astype(np.uint8), "L").convert("P")  # a palette image with these indices
    image.putdata(indices.ravel().tolist())
    image.putpalette([value for colour in colours for value in colour])
    return image


def voc_palette_mask():
    """Indices 0 (black background), 1 (a dark label colour) and 255 (a light border colour)."""
    indices = square_mask().astype(np.uint8)
    indices[5, 7:19] = 255  # a 12-pixel border line along the top of the square
    colours = [(0, 0, 0), (64, 0, 0)] + [(0, 0, 0)] * 253 + [(224, 224, 192)]
    return palette(indices, colours)


def white_first_palette_mask():
    """A palettised white-on-black picture whose index 0 is white: its colours, not its indices, say where."""
    return palette(~square_mask(), [(255, 255, 255), (0, 0, 0)])


SQUARE = int(square_mask().sum())  # 100
GOOD_MASKS = [
    ("bool", lambda: square_mask(), SQUARE),
    ("uint8-0-1", lambda: square_mask().astype(np.uint8), SQUARE),
    ("uint8-0-255", lambda: square_mask().astype(np.uint8) * 255, SQUARE),
    ("uint8-noisy-white-on-black", noisy_white_on_black, SQUARE),
    ("label-map-small-labels", label_map, 50),
    ("int64-0-1", lambda: square_mask().astype(np.int64), SQUARE),
    ("uint16-0-65535", lambda: square_mask().astype(np.uint16) * 65535, SQUARE),
    ("float-0-1", lambda: square_mask().astype(np.float32), SQUARE),
    ("soft-floor-0.05", soft, SQUARE),
    ("soft-floor-0.45", lambda: soft(0.45, 0.55), SQUARE),
    ("HxWx1", lambda: square_mask().astype(np.uint8)[:, :, None], SQUARE),
    ("rgb-white", lambda: np.repeat(square_mask()[:, :, None], 3, axis=2).astype(np.uint8) * 255, SQUARE),
    ("rgb-red", lambda: np.stack([square_mask() * 200, square_mask() * 0, square_mask() * 0], 2).astype(np.uint8),
     SQUARE),
    ("rgba-opaque-black-background", lambda: rgba(square_mask()), SQUARE),
    ("rgba-opaque-pil", lambda: Image.fromarray(rgba(square_mask()), "RGBA"), SQUARE),
    ("rgba-painted-on-transparent", lambda: rgba(np.ones((H, W), bool), square_mask()), SQUARE),
    ("la-painted-on-transparent", lambda: Image.fromarray(rgba(np.ones((H, W), bool), square_mask()), "RGBA")
     .convert("LA"), SQUARE),
    ("pil-L", lambda: Image.fromarray(square_mask().astype(np.uint8) * 255), SQUARE),
    ("pil-1", lambda: Image.fromarray(square_mask()), SQUARE),
    ("palette-0-1", lambda: palette(square_mask(), [(0, 0, 0), (64, 0, 0)]), SQUARE),
    ("palette-with-light-border", voc_palette_mask, SQUARE + 12),  # the border line is object too
    ("palette-white-index-0", white_first_palette_mask, SQUARE),
]


@pytest.mark.parametrize("make, area", [(make, area) for _, make, area in GOOD_MASKS],
                         ids=[name for name, _, _ in GOOD_MASKS])
def test_accepted_masks_mark_the_object(make, area):
    mask = images.load_mask(make(), size=(H, W))
    assert mask.dtype == bool and mask.shape == (H, W) and mask.sum() == area


def blurred_square():
    """A soft-edged 8-bit white-on-black mask: grey levels on both sides of 127 along its edges."""
    from PIL import ImageFilter

    return np.asarray(Image.fromarray(square_mask().astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(2)))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int8", "int16", "int32", "int64", "uint32", "uint64"])
@pytest.mark.parametrize("picture", ["blurred", "dark-grey-background", "label-map", "zero-one"])
def test_integer_masks_answer_as_their_8_bit_twins(dtype, picture, tmp_path):
    """uint16 masks are scaled by their range (0..65535 -> 0..255), as 16-bit pictures are; other integer types hold
    8-bit values. So a blurred 16-bit mask marks what its 8-bit twin marks, and a dark-grey background is refused
    as its twin is (it used to count as object above 127 of 65535)."""
    eight_bit = {"blurred": blurred_square(), "dark-grey-background": np.where(square_mask(), 255, 20),
                 "label-map": label_map(), "zero-one": square_mask()}[picture].astype(np.uint8)
    if dtype == "int8" and eight_bit.max() > 127:
        pytest.skip("int8 cannot hold this picture's values")
    wide = eight_bit.astype(np.uint16) * 257 if dtype == "uint16" else eight_bit.astype(dtype)

    def answer(mask):  # the mask, or the refusal's message
        try:
            return images.load_mask(mask, size=(H, W)).tolist()
        except ValueError as error:
            return str(error)

    expected = answer(eight_bit)
    assert answer(wide) == expected
    if dtype == "uint16":  # and as 16-bit files: PNG (read as "I;16" or "I"), PGM (read as 32-bit integers, "I")
        for name, modes in [("deep.png", ("I", "I;16")), ("deep.pgm", ("I",))]:
            Image.fromarray(wide).save(tmp_path / name)
            assert Image.open(tmp_path / name).mode in modes
            assert answer(str(tmp_path / name)) == expected
    if picture == "dark-grey-background":  # refused: grey 20 with 255 reads as a label map with a 'void' border
        assert isinstance(expected, str) and "it looks like a label map" in expected


def test_wider_integer_masks_with_values_over_255_are_refused():
    with pytest.raises(ValueError, match=r"^mask holds int32 values up to 1000; the scale of such a mask is unclear"):
        images.load_mask(square_mask().astype(np.int32) * 1000)


def test_supports_are_checked_with_one_wording(tmp_path):
    image, mask = np.zeros((H, W, 3), np.uint8), square_mask()
    assert images.load_support(image, mask, 3)[1].sum() == SQUARE
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    cases = [((str(text), mask), "^Support 3's image: 'notes.txt' is not an image file that can be read"),
             ((image, str(text)), "^Support 3's mask: 'notes.txt' is not an image file that can be read"),
             ((image, None), "^Support 3 has no mask: paint the object or upload a mask.$"),
             ((image, np.zeros_like(mask)), "^Support 3: the mask is empty; mark the object on the image.$"),
             ((image, ~np.zeros_like(mask)), "^Support 3: the mask covers the whole image; mark only the object.$")]
    for (photo, support_mask), message in cases:
        with pytest.raises(ValueError, match=message):
            images.load_support(photo, support_mask, 3)


def test_palette_mask_file_reads_indices(tmp_path):
    path = tmp_path / "labels.png"
    voc_palette_mask().save(path)
    assert Image.open(path).mode == "P"
    assert images.load_mask(str(path), size=(H, W)).sum() == SQUARE + 12


def test_jpeg_white_on_black_mask(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[19:43, 16:48] = 255  # not aligned with the 8x8 JPEG blocks: noise on both sides of the edges
    path = tmp_path / "mask.jpg"
    Image.fromarray(mask).save(path, quality=75)
    assert (np.asarray(Image.open(path)) > 0).sum() > 24 * 32 + 20  # the JPEG did add noise in the black
    assert abs(int(images.load_mask(str(path)).sum()) - 24 * 32) <= 8


def test_opaque_rgba_mask_file(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(rgba(square_mask()), "RGBA").save(path)
    assert images.load_mask(str(path), size=(H, W)).sum() == SQUARE


def test_mask_of_a_shrunk_image_is_resized():
    image = images.load_image(np.zeros((999, 2500, 3), np.uint8))
    assert image.shape[:2] == (818, 2048)  # 818.4 rounded: the aspect ratio moved a little
    mask = np.zeros((999, 2500), bool)
    mask[:, :1250] = True
    resized = images.load_mask(mask, size=image.shape[:2])
    assert resized.shape == (818, 2048) and resized[:, :1024].all() and not resized[:, 1024:].any()


def test_exif_rotated_image_and_its_mask_line_up(tmp_path):
    stored = np.full((20, 40, 3), 30, np.uint8)
    stored[:6, :6] = 250
    mask = np.zeros((20, 40), np.uint8)
    mask[:6, :6] = 255  # the bright corner, in the stored pixels
    image = images.load_image(with_orientation(stored, 6, tmp_path / "photo.jpg"))
    # a mask file with the same EXIF rotation is turned the same way
    mask_file = tmp_path / "mask.png"
    picture = Image.fromarray(mask)
    exif = picture.getexif()
    exif[0x0112] = 6
    picture.save(mask_file, exif=exif)
    loaded = images.load_mask(str(mask_file), size=image.shape[:2])
    assert loaded.sum() == 36 and image[loaded].mean() > 200 and image[~loaded].mean() < 60
    # a mask of the stored pixels (no rotation) does not fit the picture as shown: refused, not stretched
    with pytest.raises(ValueError, match="is it rotated"):
        images.load_mask(mask, size=image.shape[:2])


# ---------------------------------------------------------------------------------------------------------------
# Masks refused


def voc_label_array():
    labels = np.zeros((H, W), np.uint8)
    labels[square_mask()] = 15
    labels[square_mask(top=5, left=7, side=12) & ~square_mask()] = 255  # the border around the object
    return labels


BAD_MASKS = [
    ("leading-axis", lambda p: np.zeros((1, H, W), np.uint8),
     r"^support 1 mask has shape \(1, 24, 32\); expected \(24, 32\): drop the leading axis"),
    ("channels-first", lambda p: np.zeros((3, H, W), np.uint8), r"has shape \(3, 24, 32\).*channels-first"),
    ("two-channels", lambda p: np.zeros((H, W, 2), np.uint8), r"has shape \(24, 32, 2\); expected \(24, 32\)"),
    ("one-dimensional", lambda p: np.zeros(H * W, np.uint8), r"has shape \(768,\); expected \(24, 32\)"),
    ("transposed", lambda p: square_mask(W, H).astype(np.uint8),
     r"is 24x32 \(WxH\) but its image is 32x24: is it rotated\?"),
    ("other-aspect", lambda p: square_mask(H, H), r"is 24x24 \(WxH\) but its image is 32x24: the aspect ratios differ"),
    ("nan", lambda p: np.where(square_mask(), np.nan, 0.0), "contains NaN or infinite values"),
    ("inf", lambda p: np.where(square_mask(), np.inf, 0.0), "contains NaN or infinite values"),
    ("float-0-255", lambda p: square_mask() * 255.0, r"float masks must hold values in \[0, 1\].*spans \[0, 255\]"),
    ("float-negative", lambda p: square_mask() - 0.5, r"float masks must hold values in \[0, 1\].*spans \[-0\.5, "),
    ("negative-labels", lambda p: square_mask().astype(np.int32) - 1, r"holds negative values \(down to -1\)"),
    ("voc-labels-with-255-border", lambda p: voc_label_array(), r"holds labels 15 and 255: it looks like a label map"),
    ("complex", lambda p: np.zeros((H, W), complex), "type complex128; expected bool, integer or float"),
    ("empty", lambda p: np.zeros((0, W), bool), r"is empty \(size 32x0\)"),
    ("truncated-path", lambda p: str(truncated_jpeg(p)), "'truncated.jpg' is not an image file.*truncated"),
    ("truncated-pil", lambda p: Image.open(truncated_jpeg(p)), "the PIL image could not be read.*truncated"),
    ("text-file", lambda p: text_file(p), "is not an image file"),
]


@pytest.mark.parametrize("make, match", [(make, match) for _, make, match in BAD_MASKS],
                         ids=[name for name, _, _ in BAD_MASKS])
def test_bad_masks_are_refused_with_a_reason(tmp_path, make, match):
    with pytest.raises(ValueError, match=match) as error:
        images.load_mask(make(tmp_path), size=(H, W), what="support 1 mask")
    assert str(error.value).startswith("support 1 mask")


def test_mask_messages_without_a_size():
    with pytest.raises(ValueError, match=re.escape("mask has shape (1, 480, 640); expected (H, W)")):
        images.load_mask(np.zeros((1, 480, 640), np.uint8))
    with pytest.raises(ValueError, match=re.escape("mask is 640x480 (WxH) but its image is 480x640: is it rotated?")):
        images.load_mask(np.zeros((480, 640), bool), size=(640, 480))
