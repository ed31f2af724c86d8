"""Tests of run.sh's stage plan (its dry run) and of summary.py on
fabricated inputs; standard library only, no GPU:

    python3 -m unittest discover -s scripts/gpu -p 'test_*.py'
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "run.sh")
SUMMARY = os.path.join(HERE, "summary.py")

MAIN = ["env", "tests_attention", "tests", "wait_weights", "parity_diffusers", "parity_rust",
        "parity_compare", "bench_rust", "bench_diffusers"]
EXTRA = ["calibrate", "parity_f32", "tests_chunked"]


def read(path):
    with open(path) as f:
        return f.read()


def dry_run(**env):
    """Runs run.sh's plan; returns (stages by name in order, run.log, the
    files of $OUT)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, work = os.path.join(tmp, "out"), os.path.join(tmp, "work")
        full = {k: v for k, v in os.environ.items()
                if k not in ("BUDGET_S", "DRY_TIMES", "DRY_MISSING")}
        full.update(DRY_RUN="1", OUT=out, WORK=work, **{k: str(v) for k, v in env.items()})
        subprocess.run(["bash", RUN], env=full, check=True, capture_output=True, timeout=60)
        rows = [dict(f.split("=", 1) for f in line.split(" ", 5) if "=" in f)
                for line in read(os.path.join(work, "stages.txt")).splitlines()]
        log = read(os.path.join(out, "run.log"))
        return rows, log, sorted(os.listdir(out))


def by_name(rows):
    return {r["stage"]: r for r in rows}


class RunPlan(unittest.TestCase):
    def test_every_main_stage_fits_the_budget_at_its_cap(self):
        # Each stage takes its whole cap: all main stages still run in the
        # planned order, in full, and the extras are left out.
        rows, log, files = dry_run()
        names = [r["stage"] for r in rows]
        self.assertEqual(names, ["weights"] + MAIN + EXTRA)
        stages = by_name(rows)
        for name in MAIN:
            self.assertEqual(stages[name]["status"], "ok", name)
            self.assertEqual(stages[name]["seconds"], stages[name]["cap"], name)
        for name in EXTRA:
            self.assertEqual(stages[name]["status"], "skipped", name)
        self.assertEqual(files, ["run.log", "summary.md"])
        # The summary comes last, after every stage.
        last = [line for line in log.splitlines() if line.startswith("== +")][-2:]
        self.assertIn("summary", last[0])
        self.assertIn("done", last[1])
        total = int(last[0].split("+")[1].split("s")[0])
        self.assertLessEqual(total, 560 - 20)

    def test_time_left_runs_the_extras_in_order(self):
        fast = ",".join(f"{n}=5" for n in MAIN + EXTRA)
        rows, _, _ = dry_run(DRY_TIMES=fast)
        stages = by_name(rows)
        for name in MAIN + EXTRA:
            self.assertEqual(stages[name]["status"], "ok", name)
        names = [r["stage"] for r in rows]
        self.assertEqual(names[-3:], EXTRA)

    def test_a_binary_with_missing_libraries_skips_only_its_stages(self):
        rows, _, _ = dry_run(DRY_MISSING="bench_gpu")
        stages = by_name(rows)
        for name in ("parity_rust", "bench_rust"):
            self.assertEqual(stages[name]["status"], "skipped", name)
            self.assertIn("bench_gpu unusable", stages[name]["note"])
        for name in ("tests_attention", "tests", "parity_diffusers", "bench_diffusers"):
            self.assertEqual(stages[name]["status"], "ok", name)
        rows, _, _ = dry_run(DRY_MISSING="device-test")
        stages = by_name(rows)
        for name in ("tests_attention", "tests", "tests_chunked"):
            self.assertEqual(stages[name]["status"], "skipped", name)
        for name in ("parity_rust", "bench_rust", "bench_diffusers"):
            self.assertEqual(stages[name]["status"], "ok", name)

    def test_a_stage_past_its_cap_is_cut_and_the_rest_run(self):
        rows, _, _ = dry_run(DRY_TIMES="tests_attention=1000")
        stages = by_name(rows)
        self.assertEqual(stages["tests_attention"]["status"], "timeout")
        self.assertEqual(stages["tests_attention"]["seconds"], "40")
        for name in MAIN[2:]:
            self.assertEqual(stages[name]["status"], "ok", name)

    def test_without_weights_their_stages_are_skipped(self):
        rows, _, _ = dry_run(DRY_TIMES="wait_weights=1000")
        stages = by_name(rows)
        self.assertEqual(stages["wait_weights"]["status"], "timeout")
        for name in ("parity_diffusers", "parity_rust", "bench_rust", "bench_diffusers",
                     "parity_f32"):
            self.assertEqual(stages[name]["status"], "skipped", name)
            self.assertIn("weights unusable", stages[name]["note"])
        self.assertEqual(stages["parity_compare"]["status"], "ok")

    def test_a_short_budget_cuts_the_last_stages_but_not_the_summary(self):
        rows, log, files = dry_run(BUDGET_S=300)
        stages = by_name(rows)
        self.assertEqual(stages["parity_diffusers"]["status"], "ok")
        self.assertEqual(stages["bench_diffusers"]["status"], "skipped")
        self.assertEqual(stages["bench_diffusers"]["note"], "budget")
        self.assertIn("summary", [ln for ln in log.splitlines() if ln.startswith("== +")][-2])
        self.assertEqual(files, ["run.log", "summary.md"])


def write_safetensors(path, tensors):
    """F32 tensors {name: (shape, values)} in the safetensors format."""
    header, data = {}, b""
    for name, (shape, values) in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def summary(*args):
    return subprocess.run([sys.executable, SUMMARY, *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def kv(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Summary(unittest.TestCase):
    def test_parity_of_fabricated_outputs(self):
        with tempfile.TemporaryDirectory() as work:
            f32 = [1.0, -2.0, 4.0, 0.5]
            write_safetensors(os.path.join(work, "diffusers_f32.safetensors"),
                              {"output": ((1, 4), f32)})
            write_safetensors(os.path.join(work, "diffusers_bf16.safetensors"),
                              {"output": ((1, 4), [1.0, -2.0, 4.0, 0.25])})
            write_safetensors(os.path.join(work, "rust.safetensors"),
                              {"output": ((1, 4), [1.0, -2.5, 4.0, 0.5])})
            p = kv(summary("parity", work))
            self.assertEqual(p, kv(read(os.path.join(work, "parity.txt"))))
            self.assertEqual(float(p["parity_scale"]), 4.0)
            self.assertEqual(float(p["parity_rust_bf16_vs_diffusers_f32_max_abs"]), 0.5)
            self.assertEqual(float(p["parity_rust_bf16_vs_diffusers_f32_of_scale"]), 0.125)
            norm = sum(x * x for x in f32) ** 0.5
            self.assertAlmostEqual(float(p["parity_rust_bf16_vs_diffusers_f32_rel_l2"]),
                                   0.5 / norm, places=5)
            self.assertEqual(float(p["parity_diffusers_bf16_vs_diffusers_f32_max_abs"]), 0.25)
            self.assertEqual(float(p["parity_rust_bf16_vs_diffusers_bf16_max_abs"]), 0.5)
            self.assertNotIn("parity_missing", p)
            table = summary("table", work)
            self.assertIn("libcogvideo bf16 vs diffusers f32: max abs 0.5 (12.50% of scale)", table)

    def test_parity_with_one_reference_and_a_shape_mismatch(self):
        with tempfile.TemporaryDirectory() as work:
            write_safetensors(os.path.join(work, "diffusers_bf16.safetensors"),
                              {"output": ((2, 2), [1.0, 2.0, 3.0, -8.0])})
            write_safetensors(os.path.join(work, "rust.safetensors"),
                              {"output": ((4,), [1.0, 2.0, 3.0, -8.0])})
            p = kv(summary("parity", work))
            self.assertEqual(float(p["parity_scale"]), 8.0)
            self.assertIn("shapes", p["parity_rust_bf16_vs_diffusers_bf16_error"])
            self.assertEqual(p["parity_missing"], "diffusers_f32.safetensors")

    def test_table_of_fabricated_logs(self):
        with tempfile.TemporaryDirectory() as work:
            with open(os.path.join(work, "rust_time.txt"), "w") as f:
                f.write("load_s=10\ndevice=Cuda(0)\ndtype=BF16\nattention=cuDNN 9.13.1 unified SDPA\n"
                        "size=720x480x49\nencode_text_s=0.5\nt2v_step_first_s=9\nt2v_step_min_s=1.9\n"
                        "t2v_step_median_s=2.0\nt2v_step_timed_steps=3\ndecode_s=10\n"
                        "attention_after_t2v=cuDNN 9.13.1 unified SDPA; chunked where cuDNN "
                        "refused: [B 2]: no engine\n")
            with open(os.path.join(work, "diffusers_time.txt"), "w") as f:
                f.write("encode_text_s=0.5\nt2v_step_median_s=4.0\ndecode_s=20\n")
            with open(os.path.join(work, "smi_rust.csv"), "w") as f:
                f.write("1024\n20480\n2048\n")
            with open(os.path.join(work, "stages.txt"), "w") as f:
                f.write("stage=tests status=timeout rc=124 seconds=60 cap=60\n"
                        "stage=bench_rust status=skipped rc=- seconds=0 cap=100 note=bench_gpu "
                        "unusable\n")
            table = summary("table", work)
            self.assertIn("| tests | timeout (exit 124) | 60 (60) |  |", table)
            self.assertIn("| bench_rust | skipped (exit -) | 0 (100) | bench_gpu unusable |",
                          table)
            self.assertIn("| t2v step with CFG, median (s) | 2.000 | 4.000 | 0.50 |", table)
            # 0.5 + 50 x 2 + 10 against 0.5 + 50 x 4 + 20.
            self.assertIn("estimated (s): T5 + 50 x median step + decode | 110.5 | 220.5 | 0.50 |",
                          table)
            self.assertIn("| peak GPU memory, nvidia-smi (GiB) | 20.0 | - | - |", table)
            self.assertIn("- attention at load: cuDNN 9.13.1 unified SDPA\n", table)
            self.assertIn("- attention after the t2v steps: cuDNN 9.13.1 unified SDPA; chunked "
                          "where cuDNN refused", table)
            self.assertIn("full-size parity: not computed", table)

    def test_an_empty_work_folder_still_gives_a_table(self):
        with tempfile.TemporaryDirectory() as work:
            table = summary("table", work)
            self.assertIn("| t2v step with CFG, min (s) | - | - | - |", table)
            self.assertEqual(kv(summary("parity", work))["parity_missing"],
                             "rust.safetensors,diffusers_bf16.safetensors,"
                             "diffusers_f32.safetensors")


if __name__ == "__main__":
    unittest.main()
