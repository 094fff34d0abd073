import numpy as np
import pytest
from PIL import Image

from fss_demo import images


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


def test_exif_rotation_is_applied(tmp_path):
    picture = Image.fromarray(np.zeros((10, 40, 3), np.uint8))
    exif = picture.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    path = tmp_path / "rotated.jpg"
    picture.save(path, exif=exif)
    assert images.load_image(str(path)).shape[:2] == (40, 10)


def test_huge_images_are_shrunk():
    huge = np.zeros((3000, 5000, 3), np.uint8)
    assert max(images.load_image(huge).shape[:2]) == images.MAX_SIDE


def test_bad_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match="not an image"):
        images.load_image(str(text))
    with pytest.raises(ValueError, match="no file"):
        images.load_image(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="empty"):
        images.load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        images.load_image(12)


def test_masks_resize_and_read_alpha():
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 255
    resized = images.load_mask(mask, size=(20, 40))
    assert resized.shape == (20, 40) and resized[:10].all() and not resized[10:].any()
    painted = np.zeros((6, 6, 4), np.uint8)
    painted[2:4, 2:4, 3] = 128
    assert images.load_mask(painted).sum() == 4
    assert images.load_mask(Image.fromarray(painted, "RGBA")).sum() == 4
