"""`pip install .` gives a working package: a wheel built from this tree, installed into a fresh virtual
environment (its dependencies come from this interpreter's site-packages, so nothing is downloaded), imports,
loads a saved model folder and segments, and says clearly that it has no bundled weights."""
import os
import shutil
import site
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USE_INSTALLED = """
import sys, numpy as np, fss_demo
assert "site-packages" in fss_demo.__file__, fss_demo.__file__
try:
    fss_demo.load_model()
except ValueError as error:
    print("no bundled weights:", error)
model = fss_demo.load_model(sys.argv[1])
image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
mask = np.zeros((40, 50), bool); mask[5:20, 5:30] = True
print("masks:", len(model.segment(image, [(image, mask), (image, mask)]).masks))
"""


def run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def test_wheel_installs_and_works_in_a_fresh_venv(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "model")
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source)
    shutil.copytree(os.path.join(ROOT, "fss_demo"), source / "fss_demo", ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(source)])
    wheel = next((tmp_path / "dist").glob("fss_demo-*.whl"))
    venv = tmp_path / "venv"
    # The nested environment sees this interpreter's own site-packages through a .pth file (so nothing is downloaded,
    # and it works from a plain venv as from a system Python); pip comes from there too. Its own site-packages come
    # first, so the installed wheel is what gets imported.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    nested = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    with open(os.path.join(nested, "parent_environment.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    run([python, "-m", "pip", "install", "--no-index", str(wheel)])  # declared dependencies must all be met here
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FSS_DEMO_WEIGHTS")}
    out = run([python, "-c", USE_INSTALLED, str(tmp_path / "model")], cwd=str(tmp_path), env=env)
    assert "no bundled weights: no bundled weights here (an installed package has none): pass a model folder or a " \
           "Hub repo id" in out
    assert "masks: 2" in out
