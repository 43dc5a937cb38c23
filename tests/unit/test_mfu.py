"""The MFU's peak: the datasheet number of the exact device name, never a look-alike's."""
from __future__ import annotations

import pytest

from components.train.mfu import datasheet_peak, mfu


def test_each_h100_form_factor_gets_its_own_peak():
    assert datasheet_peak("NVIDIA H100 80GB HBM3")[0] == 989e12
    assert datasheet_peak("NVIDIA H100 PCIe")[0] == 756e12  # a substring match on "H100" gave it 989
    assert datasheet_peak("NVIDIA H100 NVL")[0] == 835e12
    assert datasheet_peak("NVIDIA H200")[0] == 989e12 and datasheet_peak("NVIDIA H200 NVL")[0] == 835e12
    assert datasheet_peak("NVIDIA A100 80GB PCIe")[1] == "datasheet bf16 dense, NVIDIA A100 80GB PCIe"


def test_an_unknown_device_asks_for_its_peak():
    with pytest.raises(ValueError, match=r"'NVIDIA H100 SXM5 94GB'.*set pretrain.peak_flops"):
        datasheet_peak("NVIDIA H100 SXM5 94GB")


def test_mfu_is_the_job_flops_over_all_devices_peak():
    assert mfu(1.8e9, 1.0e6, 8, 756e12) == pytest.approx(1.8e15 / (8 * 756e12))
