"""What of a site's failure may reach the server: the rule and the key, not its values."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from segguided_federation.redaction import RedactedError, public_text
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_encoding import FixedPointCodec, SecureRangeError
from segguided_federation.site_data import SiteError, load_site


def test_a_redacted_error_keeps_its_two_parts_apart_even_pickled():
    error = pickle.loads(pickle.dumps(RedactedError("rule broken (key)", "value 137")))
    assert public_text(error) == "rule broken (key)"
    assert "137" in str(error)  # for the hospital's own log


def test_any_other_exception_leaves_only_its_type():
    assert public_text(FileNotFoundError("/data/hospital-a/patient-17.nii.gz")) == (
        "FileNotFoundError (details in the hospital's log)"
    )


@pytest.mark.parametrize(
    "updates, weight, metrics, secret",
    [
        ([np.array([0.7311], dtype=np.float32)], 10, {}, "0.7311"),
        ([np.zeros(2, dtype=np.float32)], 137, {}, "137"),
        ([np.zeros(2, dtype=np.float32)], 10, {"loss": 123.25}, "123.25"),
    ],
)
def test_range_errors_name_the_key_and_keep_the_value_private(updates, weight, metrics, secret):
    codec = FixedPointCodec(clients=3, max_weight=100, clipping_range=0.5, metric_keys=tuple(metrics))
    with pytest.raises(SecureRangeError) as raised:
        codec.encode(updates, weight, metrics)
    assert secret not in public_text(raised.value) and secret in str(raised.value)
    assert "secure-aggregation" in public_text(raised.value) or "loss" in public_text(raised.value)


def test_a_site_that_fails_qa_names_the_gate_not_its_folder_or_counts(tmp_path):
    data = tmp_path / "hospital-a-private-folder"
    (data / "case-1").mkdir(parents=True)
    (data / "case-1" / "case-1_t1.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(SiteError) as raised:
        load_site({"data-path": str(data), "site-id": "hospital-a"}, RunConfig())
    public = public_text(raised.value)
    assert "hospital-a:" in public and "QA gate" in public
    assert "private-folder" not in public and str(data) in str(raised.value)
