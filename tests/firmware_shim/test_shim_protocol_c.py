"""The C code printed in PROTOCOL.md, compiled and run against the test vectors.

Firmware authors will copy those snippets, so they must be right: this
compiles them with the system C compiler and checks CRC-32C and COBS against
every frame vector.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import firmware_shim

SHIM_DIR = Path(firmware_shim.__file__).resolve().parent
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

_HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>

%s

static size_t unhex(const char *text, uint8_t *out) {
    size_t n = 0;
    unsigned int byte;
    while (sscanf(text + 2 * n, "%%2x", &byte) == 1) out[n++] = (uint8_t)byte;
    return n;
}

static void hexout(const uint8_t *data, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%%02x", data[i]);
    printf("\n");
}

int main(void) {
    static char line[8192];
    static uint8_t in[4096], out[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        size_t n = unhex(line + 2, in);
        if (line[0] == 'C') printf("%%08x\n", crc32c(in, n));
        else if (line[0] == 'E') hexout(out, cobs_encode(in, n, out));
        else {
            long m = cobs_decode(in, n, out);
            if (m < 0) printf("ERR\n"); else hexout(out, (size_t)m);
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_codec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert CC is not None, "no C compiler (cc/gcc) on PATH: install gcc to check the spec's C code"
    text = (SHIM_DIR / "PROTOCOL.md").read_text(encoding="utf-8")
    snippets = re.findall(r"```c\n(.*?)```", text, re.S)
    assert len(snippets) == 2, "PROTOCOL.md should print the CRC-32C and the COBS code"
    work = tmp_path_factory.mktemp("c")
    source, binary = work / "codec.c", work / "codec"
    source.write_text(_HARNESS % "\n".join(snippets))
    subprocess.run(
        [CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    return binary


def run(binary: Path, requests: list[str]) -> list[str]:
    result = subprocess.run(
        [str(binary)],
        input="".join(f"{r}\n" for r in requests),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.splitlines()


def test_c_crc32c_check_value(c_codec: Path) -> None:
    assert run(c_codec, ["C " + b"123456789".hex()]) == ["e3069283"]


def test_c_code_agrees_with_every_frame_vector(c_codec: Path) -> None:
    vectors = json.loads((SHIM_DIR / "test_vectors.json").read_text(encoding="utf-8"))["vectors"]
    frames = [v for v in vectors if v["expect"] == "frame"]
    requests, expected = [], []
    for vector in frames:
        raw = bytes.fromhex(vector["frame"]["raw_hex"])
        encoded = vector["wire_hex"][:-2]
        requests.append("C " + raw[:-4].hex())
        expected.append(raw[-4:][::-1].hex())
        requests.append("D " + encoded)
        expected.append(raw.hex())
        if vector["encode"]:
            requests.append("E " + raw.hex())
            expected.append(encoded)
    assert run(c_codec, requests) == expected


def test_c_decoder_refuses_bad_cobs(c_codec: Path) -> None:
    assert run(c_codec, ["D 051122", "D 0311"]) == ["ERR", "ERR"]
