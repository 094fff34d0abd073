"""Turn whatever a user hands us (paths, PIL images, numpy arrays) into clean RGB images and binary masks.

Every problem becomes a `ValueError` whose message a person can act on.
"""
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Side the network sees (as in the paper); any photo is squashed to it and the prediction resized back.
NETWORK_SIZE = 320
# Larger inputs are first shrunk so their longer side is at most this, to bound memory and time.
MAX_SIDE = 2048
# PIL refuses images over ~179 megapixels by default; we keep that guard against decompression bombs.


def _open(source, what):
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"{what}: no file at {path!r}")
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{what}: {os.path.basename(path)!r} is not an image file that can be read ({error})") from None
        except Image.DecompressionBombError:
            raise ValueError(f"{what}: {os.path.basename(path)!r} is too large to open safely") from None
        return image
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return source
    raise ValueError(f"{what}: expected a file path, a PIL image or a numpy array, got {type(source).__name__}")


def _to_uint8(array):
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float32))
        scale = 255.0 if finite.max(initial=0) <= 1.0 else 1.0
        return np.clip(finite * scale, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported array type {array.dtype}")


def _check_size(height, width, what):
    if height == 0 or width == 0:
        raise ValueError(f"{what} is empty (size {width}x{height})")


def load_image(source, what="image"):
    """Return an RGB uint8 array (H, W, 3): EXIF rotation applied, alpha dropped, 16-bit scaled, huge images shrunk."""
    image = _open(source, what)
    if isinstance(image, Image.Image):
        _check_size(image.height, image.width, what)
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = Image.fromarray(_to_uint8(np.asarray(image)))  # 16-bit or float greyscale
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))  # flatten transparency onto white
        image = image.convert("RGB")
        array = np.asarray(image)
    else:
        array = image
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"{what}: expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
        _check_size(array.shape[0], array.shape[1], what)
        array = _to_uint8(array)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        elif array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        elif array.shape[2] == 4:
            array = array[:, :, :3]
    return shrink(np.ascontiguousarray(array))


def shrink(array, max_side=MAX_SIDE):
    """Downscale so that the longer side is at most `max_side` (keeps aspect)."""
    height, width = array.shape[:2]
    if max(height, width) <= max_side:
        return array
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.BILINEAR if array.ndim == 3 else Image.NEAREST
    return np.asarray(Image.fromarray(array).resize(size, resample))


def load_mask(source, size=None, what="mask"):
    """Return a bool array; nonzero = object. `size` = (H, W) of its image: another size is resized (nearest).

    An RGBA mask painted on a transparent layer uses its alpha channel; an RGB mask, any nonzero channel.
    """
    mask = _open(source, what)
    if isinstance(mask, Image.Image):
        _check_size(mask.height, mask.width, what)
        mask = ImageOps.exif_transpose(mask)
        if mask.mode in ("RGBA", "LA"):
            array = np.asarray(mask.getchannel("A"))
        else:
            array = np.asarray(mask)
    else:
        array = mask
        _check_size(array.shape[0] if array.ndim else 0, array.shape[1] if array.ndim > 1 else 0, what)
        if array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, 3]
    if array.ndim == 3:
        array = array.any(axis=2)
    if array.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D mask, got shape {array.shape}")
    binary = np.asarray(array) != 0
    if size is not None and binary.shape != tuple(size):
        resized = Image.fromarray(binary.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
        binary = np.asarray(resized) > 127
    return binary


def to_network(image, size=NETWORK_SIZE):
    """RGB uint8 (H, W, 3) -> float32 (3, size, size) in [0, 1], squashed like the training images."""
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0


def mask_to_network(mask, size=NETWORK_SIZE):
    """bool (H, W) -> float32 (size, size) in [0, 1]: the share of object under each network pixel."""
    resized = Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
