"""The latency benchmark measures the network at the side it says (not only pictures of that side)."""
from fss_demo import bench, hub


def test_bench_runs_the_network_at_the_given_side(capsys, monkeypatch):
    sides = []
    load = hub.load_model

    def recording_load(*args, **kwargs):
        model = load(*args, **kwargs)
        segment = model.segment
        model.segment = lambda *a, **k: sides.append(model.input_size) or segment(*a, **k)
        return model

    monkeypatch.setattr(bench, "load_model", recording_load)
    bench.main(["--repeats", "1", "--size", "96", "--threads", "1"])
    out = capsys.readouterr().out
    assert "input 96x96" in out and "leave_one_out, 5 cached supports, new query:" in out
    assert sides and set(sides) == {96}
