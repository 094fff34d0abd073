"""Turn whatever a user hands us (paths, PIL images, numpy arrays) into clean RGB images and binary masks.

Every problem becomes a `ValueError` whose message starts with what was being read ("support 2 mask", ...), names
the problem and says what was expected. What is unambiguous is accepted; what could be read in two ways is refused
rather than guessed (a guess would give a silently wrong segmentation).
"""
import math
import os

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin

# Side the network sees (as in the paper); any photo is squashed to it and the prediction resized back.
NETWORK_SIZE = 320
# Larger photos are worked on shrunk so their longer side is at most this, to bound memory and time; the model's
# masks still come back at the photo's own size.
MAX_SIDE = 2048
# Each support adds a ConvLSTM step and, for the OR, a 1-shot pass (and its gate traces): the most taken at once.
MAX_SUPPORTS = 10
# A support mask covering more than this share of its image marks no object to tell apart from a background.
WHOLE_IMAGE_SHARE = 0.995
# A mask whose aspect ratio differs from its image's by more than this share is refused rather than stretched.
ASPECT_TOLERANCE = 0.02

IMAGE_SHAPES = "(H, W), (H, W, 3) or (H, W, 4)"
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


# ---------------------------------------------------------------------------------------------------------------
# Opening


def _too_large(what, name):
    return ValueError(f"{what}: {name} is too large to open safely (over {_bomb_limit() / 1e6:.0f} megapixels, "
                      f"PIL's guard against decompression bombs); expected a smaller picture")


def _bomb_limit():
    """Pixels above which PIL refuses to open an image (twice Image.MAX_IMAGE_PIXELS, about 179 MP)."""
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else float("inf")


def _decode_smaller(image, side):
    """Have a JPEG at least twice `side` on its longer side decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's
    reduced decoding), still at least `side`: it is shrunk to `side` anyway, and a 178-MP photo decoded whole took
    5.5-9 s and 2.4 GB (session 41). Other formats have no such decoding."""
    scale = side / max(image.size)
    if isinstance(image, JpegImagePlugin.JpegImageFile) and scale <= 0.5:  # MPO (phones' JPEGs) included
        image.info["stored_size"] = image.size  # the photo's own size, which the answer comes back at
        image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def _open(source, what, decode_side=None):
    """A loaded PIL image or a numpy array; files that cannot be read become ValueErrors naming `what`. A JPEG file
    may be decoded smaller, down to `decode_side` on its longer side (`_decode_smaller`)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"{what}: no file at {path!r}")
        name = repr(os.path.basename(path))
        # DecompressionBombError is no OSError: it gets its own clause (raised by open() as well as by load()).
        try:
            image = Image.open(path)
            if decode_side:
                _decode_smaller(image, decode_side)
            image.load()
        except Image.DecompressionBombError:
            raise _too_large(what, name) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:  # UnidentifiedImageError is an OSError
            reason = str(error).replace(repr(path), name).replace(path, os.path.basename(path))  # no server paths
            raise ValueError(f"{what}: {name} is not an image file that can be read ({reason}); "
                             f"expected a complete PNG, JPEG or other picture file") from None
        return image
    if isinstance(source, Image.Image):
        # A PIL image opened by the caller is read lazily: a truncated or damaged file only fails here.
        if source.width * source.height > _bomb_limit():
            raise _too_large(what, "the PIL image")
        try:
            source.load()
        except Image.DecompressionBombError:
            raise _too_large(what, "the PIL image") from None
        except (OSError, SyntaxError, ValueError, EOFError, AttributeError, AssertionError) as error:
            # (a PIL image whose file was closed before it was read fails with an AssertionError)
            raise ValueError(f"{what}: the PIL image could not be read ({str(error) or type(error).__name__}): "
                             f"is its file truncated, damaged or already closed? Expected a complete picture") from None
        return source
    if isinstance(source, np.ndarray):
        return source
    raise ValueError(f"{what}: expected a file path, a PIL image or a numpy array, got {type(source).__name__}")


def _check_size(height, width, what):
    if height == 0 or width == 0:
        raise ValueError(f"{what} is empty (size {width}x{height}); expected a picture at least 1x1")


def _upright(image, what):
    """Apply the EXIF orientation, so that the array is the picture as viewers show it."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # a malformed EXIF block: refuse rather than guess the orientation
        raise ValueError(f"{what}: its EXIF orientation could not be read ({error}); "
                         f"expected a picture with valid or no EXIF data") from None


def _own_size(image):
    """(H, W) of a PIL image as opened (its EXIF orientation tag still there, which `_upright`'s copy has not) as
    viewers show it, at its size as stored in its file even if it was decoded smaller. Asked once `_upright` has
    read the same EXIF data (it refuses malformed data with a message)."""
    width, height = image.info.get("stored_size", image.size)
    turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # transposed or rotated by 90 degrees
    return (width, height) if turned else (height, width)


def _native(array):
    """The array in native byte order (big-endian 16-bit data from some readers compares unlike np.uint16)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _channels_first_hint(shape):
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        return ": it looks channels-first (C, H, W); pass array.transpose(1, 2, 0)"
    if len(shape) == 4 and shape[0] == 1:
        return ": it looks like a batch of one; pass array[0]"
    return ""


def _finite(array, what):
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values; expected finite values in [0, 1]")


# ---------------------------------------------------------------------------------------------------------------
# Images


def _pixels_to_uint8(array, what, sixteen_bit=False):
    """uint8 pixels from an image array; refuses values whose scale is ambiguous.

    bool: False/True -> 0/255 (an unambiguous black-and-white picture). uint8: as is. uint16 (or `sixteen_bit`,
    a 16-bit file read by PIL as 32-bit integers): value >> 8. float: finite values in [0, 1], times 255. Other
    integers: values in 0..255, as they are.
    """
    array = _native(array)
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if kind == "f":
        _finite(array, what)
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            hint = " (if it holds 0..255, divide it by 255 or pass uint8)" if low >= 0 and high <= 255 else ""
            raise ValueError(f"{what}: float images must hold values in [0, 1]; "
                             f"this one spans [{low:g}, {high:g}]{hint}")
        return np.rint(array.astype(np.float32) * 255).astype(np.uint8)
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if sixteen_bit and low >= 0 and high <= 65535:
            return (array >> 8).astype(np.uint8)
        if low < 0 or high > 255:
            raise ValueError(f"{what} holds {array.dtype} values in [{low}, {high}]; {array.dtype} images must hold "
                             f"values in 0..255: pass uint8 (0..255) or uint16 (0..65535)")
        return array.astype(np.uint8)
    raise ValueError(f"{what} holds values of type {array.dtype}; expected uint8, uint16, bool or float in [0, 1]")


def _flatten_alpha(image):
    """RGB PIL image from one with transparency: transparent parts become white, as most viewers show them."""
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def load_image(source, what="image"):
    """Return an RGB uint8 array (H, W, 3) from a path, a PIL image or a numpy array.

    EXIF rotation is applied; transparency is flattened onto white; 16-bit pictures are scaled to 8 bit; images
    larger than MAX_SIDE are shrunk. Arrays: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8, uint16 (>> 8),
    bool (0/255), float with finite values in [0, 1] (times 255) or other integers with values in 0..255.
    Anything else is refused with a ValueError starting with `what`.
    """
    return load_image_with_size(source, what)[0]


def load_image_with_size(source, what="image"):
    """`load_image`, and the (H, W) of the picture before it was shrunk to MAX_SIDE (its own size, upright)."""
    image = _open(source, what, decode_side=MAX_SIDE)
    if isinstance(image, Image.Image):
        _check_size(image.height, image.width, what)
        from_file = image.format is not None
        upright = _upright(image, what)  # first: it refuses malformed EXIF data with a message
        own_size = _own_size(image)
        image = upright
        if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
            # 16-bit greyscale files (PIL reads some as 32-bit "I"), float or integer greyscale
            sixteen_bit = image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and from_file)
            image = Image.fromarray(_pixels_to_uint8(np.asarray(image), what, sixteen_bit))
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
            image = _flatten_alpha(image)
        try:
            array = np.asarray(image.convert("RGB"))
        except (ValueError, OSError) as error:
            raise ValueError(f"{what}: a PIL image in mode {image.mode} cannot be turned into RGB ({error}); "
                             f"expected an RGB, greyscale or palette picture") from None
    else:
        array = image
        shape = tuple(array.shape)
        if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
            raise ValueError(f"{what} has shape {shape}; expected {IMAGE_SHAPES}{_channels_first_hint(shape)}")
        _check_size(shape[0], shape[1], what)
        array = _pixels_to_uint8(array, what)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        elif shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        elif shape[2] == 4:  # as for PIL images: transparent parts onto white
            array = np.asarray(_flatten_alpha(Image.fromarray(np.ascontiguousarray(array), "RGBA")))
        own_size = tuple(array.shape[:2])
    return fit(np.ascontiguousarray(array), MAX_SIDE, own_size=own_size), own_size


def fit(array, side, enlarge=False, own_size=None):
    """Resize an image (H, W, 3) or a bool mask (H, W), keeping its aspect, so that its longer side is `side`;
    only shrinks unless `enlarge`. Masks are resized nearest, images bilinear. `own_size`: the (H, W) of the picture
    that the array was decoded smaller from, if it was; the result then has the size the whole picture would get."""
    height, width = own_size or array.shape[:2]
    size = (height, width)
    if max(height, width) > side or (max(height, width) < side and enlarge):
        scale = side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == array.shape[:2]:
        return array
    if array.dtype == np.bool_:
        return resize_mask(array, size)
    return np.asarray(Image.fromarray(array).resize(size[::-1], Image.BILINEAR))


def resize_mask(mask, size):
    """A bool mask (h, w) at `size` (H, W), nearest: a mask worked out on a shrunk photo, at the photo's own size."""
    return mask if mask.shape == tuple(size) else mask_picture(mask, size) > 127


def mask_picture(mask, size=None):
    """A bool mask as white on black (uint8, 255 = object), what image tools and the app read as a mask; at `size`
    (H, W) if given, nearest. Made white on black before it is enlarged: for a 48-MP photo a third to two thirds of
    the time of enlarging the bool mask first (session 41)."""
    picture = mask.astype(np.uint8) * 255
    if size is None or picture.shape == tuple(size):
        return picture
    return np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.NEAREST))


# ---------------------------------------------------------------------------------------------------------------
# Supports: one checker, one wording, for the Python API, the page and the endpoint


def check_support_count(count):
    """Refuse no supports, or more than MAX_SUPPORTS."""
    if count == 0:
        raise ValueError("supports: give at least one support photo with a mask of the object to find.")
    if count > MAX_SUPPORTS:
        raise ValueError(f"supports: {count} given; at most {MAX_SUPPORTS} are taken.")


def load_support(image, mask, number):
    """(RGB uint8 image, bool mask at its size) of support `number` (1-based); every problem is a ValueError that
    starts with "Support N". `mask` None: no mask was given."""
    image = load_image(image, f"Support {number}'s image")
    if mask is None:
        raise ValueError(f"Support {number} has no mask: paint the object or upload a mask.")
    mask = load_mask(mask, size=image.shape[:2], what=f"Support {number}'s mask")
    share = mask.mean()
    if share == 0:
        raise ValueError(f"Support {number}: the mask is empty; mark the object on the image.")
    if share > WHOLE_IMAGE_SHARE:
        raise ValueError(f"Support {number}: the mask covers the whole image; mark only the object.")
    return image, mask


# ---------------------------------------------------------------------------------------------------------------
# Masks


def _object(values, what):
    """bool (H, W) from a single-channel mask, by the rule of its type (see `load_mask`)."""
    kind = values.dtype.kind
    if kind == "b":
        return values
    if kind == "f":
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise ValueError(f"{what}: float masks must hold values in [0, 1] (object above 0.5); this one spans "
                             f"[{low:g}, {high:g}]; expected a probability mask, or pass bool or uint8")
        return values > 0.5
    if kind in "iu":
        values = _eight_bit_twin(values, what)
        high = int(values.max())
        if high <= 127:
            return values != 0  # a 0/1 mask or a label map with small labels
        if high == 255:
            _refuse_label_map_with_void(values, what)
        return values > 127  # a white-on-black picture: JPEG noise in the black is ignored
    raise ValueError(f"{what} holds values of type {values.dtype}; expected bool, integer or float in [0, 1]")


def _eight_bit_twin(values, what, sixteen_bit=False):
    """An integer mask as uint8, scaled as images are: uint16 (and 16-bit files, `sixteen_bit`) by its range,
    0..65535 -> 0..255, so a 16-bit mask answers as its 8-bit twin; other integer types must hold 0..255 (label
    maps, 0/1 masks, 8-bit values in a wider type), taken as they are."""
    low, high = int(values.min()), int(values.max())
    if low < 0:
        raise ValueError(f"{what} holds negative values (down to {low}); expected 0 = background and "
                         f"positive = object")
    if values.dtype == np.uint16 or (sixteen_bit and high <= 65535):
        return (values >> 8).astype(np.uint8)
    if high > 255:
        raise ValueError(f"{what} holds {values.dtype} values up to {high}; the scale of such a mask is unclear: pass "
                         f"uint8 (0..255, white = object), uint16 (0..65535) or bool")
    return values.astype(np.uint8)


def _refuse_label_map_with_void(values, what):
    """A label map whose 255 marks borders or 'void' (PASCAL VOC) would lose its labels under the > 127 rule."""
    counts = np.bincount(values.ravel().astype(np.intp, copy=False), minlength=256)
    if counts[128:255].any():  # grey levels above 127 (anti-aliasing, JPEG, soft masks): a picture, not labels
        return
    labels = np.flatnonzero(counts[1:128]) + 1
    if not 0 < len(labels) <= 32 or counts[1:128].sum() < 0.001 * values.size:
        return
    # Labels fill regions; JPEG noise in the black is speckles and thin bands: most of it has no interior.
    inner = values[1:-1, 1:-1]
    interior = ((inner >= 1) & (inner <= 127) & (inner == values[:-2, 1:-1]) & (inner == values[2:, 1:-1])
                & (inner == values[1:-1, :-2]) & (inner == values[1:-1, 2:]))
    if interior.sum() >= 0.25 * counts[1:128].sum():
        shown = ", ".join(str(label) for label in labels[:8]) + (", ..." if len(labels) > 8 else "")
        raise ValueError(f"{what} holds labels {shown} and 255: it looks like a label map whose 255 marks borders "
                         f"or 'void' (as in PASCAL VOC), so neither 'nonzero' nor 'white' is the object; expected "
                         f"a mask of one object: pass (labels == k) as a bool mask")


def _mask_values(array, what):
    """bool (H, W) from a mask array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."""
    array = _native(array)
    if array.dtype.kind == "f":
        _finite(array, what)
    elif array.dtype.kind not in "biu":
        raise ValueError(f"{what} holds values of type {array.dtype}; expected bool, integer or float in [0, 1]")
    if array.ndim == 3:
        if array.shape[2] == 4:
            alpha = array[:, :, 3]
            if alpha.min() != alpha.max():  # painted on a transparent layer: the alpha says where
                return _object(alpha, what)
            array = array[:, :, :3]  # constant alpha (e.g. opaque): the colours say where
        array = array.max(axis=2)
    return _object(array, what)


def _pil_mask_array(mask, what, from_file):
    """A numpy mask array (or an already binary bool array) from a loaded PIL image; `from_file`: it was read from
    a file (asked before `_upright`, whose copy forgets the file's format)."""
    mode = mask.mode
    if mode == "P" and "transparency" not in mask.info:
        palette = mask.getpalette() or []
        indices = np.asarray(mask)
        if len(palette) < 3 or max(palette[:3]) <= 32:
            return indices != 0  # a label map: index 0 (black) is the background
        # index 0 is not black, so this is a palettised picture rather than a label map: read its colours
        mode, mask = "RGB", mask.convert("RGB")
    if mode == "I" and from_file:  # a 16-bit greyscale file, read by PIL as 32-bit integers
        return _eight_bit_twin(np.asarray(mask), what, sixteen_bit=True)
    if mode in ("1", "L", "RGB", "RGBA", "F", "I") or mode in _SIXTEEN_BIT_MODES:
        return np.asarray(mask)
    try:
        return np.asarray(mask.convert("RGBA" if mode in ("LA", "La", "PA", "RGBa", "P") else "RGB"))
    except (ValueError, OSError) as error:
        raise ValueError(f"{what}: a PIL image in mode {mode} cannot be read as a mask ({error}); "
                         f"expected a greyscale, palette, RGB or RGBA picture") from None


def _aspect_close(height, width, target_height, target_width):
    """Whether (height, width) has the aspect of (target_height, target_width), within ASPECT_TOLERANCE or one
    pixel of rounding (the image may have been shrunk to MAX_SIDE)."""
    predicted_height = height * target_width / width
    predicted_width = width * target_height / height
    return (abs(predicted_height - target_height) <= max(ASPECT_TOLERANCE * target_height, 1)
            or abs(predicted_width - target_width) <= max(ASPECT_TOLERANCE * target_width, 1))


def _to_size(binary, size, what):
    height, width = size
    mask_height, mask_width = binary.shape
    if (mask_height, mask_width) == (height, width):
        return binary
    if not _aspect_close(mask_height, mask_width, height, width):
        if height != width and _aspect_close(mask_height, mask_width, width, height):
            raise ValueError(f"{what} is {mask_width}x{mask_height} (WxH) but its image is {width}x{height}: is it "
                             f"rotated? (the image's EXIF rotation is applied); expected a {width}x{height} mask")
        raise ValueError(f"{what} is {mask_width}x{mask_height} (WxH) but its image is {width}x{height}: the aspect "
                         f"ratios differ; expected a mask of the image's size, {width}x{height}")
    return resize_mask(binary, size)


def load_mask(source, size=None, what="mask"):
    """Return a bool (H, W) mask, True = object, from a path, a PIL image or a numpy array.

    Which pixels are object, by type (nonzero = object, made precise):
    - bool: as is.
    - float: finite values in [0, 1]; object = value > 0.5 (a soft probability mask with a small floor is fine).
    - integer: first read at 8 bit as images are (uint16 and 16-bit files scaled 0..65535 -> 0..255; other
      integer types must hold 0..255). Then if the maximum is above 127, object = value > 127 (a white-on-black
      picture: JPEG noise in the black is ignored); otherwise object = nonzero (a 0/1 mask or a label map with
      small labels). Negative values, and label maps mixing labels 1..127 with 255 borders (PASCAL VOC), are
      refused.
    - palette (PIL "P") pictures whose index 0 is black: object = index != 0 (a label-map PNG); otherwise their
      colours are read as an RGB mask.
    - RGB: the rule above applied to the brightest channel of each pixel.
    - RGBA (and LA): if the alpha varies (painted on a transparent layer), the rule above applied to the alpha;
      if it is constant (e.g. fully opaque), the colours are read as an RGB mask.
    Arrays must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). EXIF rotation is applied to files.

    `size` = (H, W) of its image: a mask of another size with the same aspect ratio (within 2%) is resized
    (nearest); a transposed or otherwise differently shaped mask is refused.
    """
    expected = f"({size[0]}, {size[1]})" if size is not None else "(H, W)"
    mask = _open(source, what)
    if isinstance(mask, Image.Image):
        _check_size(mask.height, mask.width, what)
        array = _pil_mask_array(_upright(mask, what), what, from_file=mask.format is not None)
    else:
        array = mask
        shape = tuple(array.shape)
        if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
            hint = _channels_first_hint(shape)
            if array.ndim == 3 and shape[0] == 1 and shape[2] not in (1, 3, 4):
                hint = ": drop the leading axis (mask[0])"
            raise ValueError(f"{what} has shape {shape}; expected {expected}{hint}")
        _check_size(shape[0], shape[1], what)
    binary = _mask_values(array, what)
    if size is not None:
        binary = _to_size(binary, tuple(size), what)
    return np.ascontiguousarray(binary)


def to_network(image, size=NETWORK_SIZE):
    """RGB uint8 (H, W, 3) -> float32 (3, size, size) in [0, 1], squashed like the training images."""
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0


def mask_to_network(mask, size=NETWORK_SIZE):
    """bool (H, W) -> float32 (size, size) in [0, 1]: the share of object under each network pixel."""
    resized = Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
