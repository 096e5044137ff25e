"""What the round a run resumes from still lacks: central validation, federated evaluation, or nothing."""

from __future__ import annotations

import pytest

from server.history import RoundRecord
from server.resumed_round import lacks_evaluation

SCORES = {"dice-mean": 0.5}
SITE = {"site-1": {"dice-mean": 0.4}}


@pytest.mark.parametrize(
    "record, due, fraction_evaluate, lacking",
    [
        # finished: validated and evaluated on the sites
        (RoundRecord(1, central=SCORES, site_evaluation=SITE, site_evaluation_finished=True), True, 1.0, False),
        # every site withheld its evaluation metrics: empty, yet finished (DP, hospital default)
        (RoundRecord(1, central=SCORES, site_evaluation_finished=True), True, 1.0, False),
        # killed after the checkpoint, before the federated evaluation ended
        (RoundRecord(1, central=SCORES), True, 1.0, True),
        # the same, with federated evaluation switched off
        (RoundRecord(1, central=SCORES), True, 0.0, False),
        # validated before the crash, no longer due under the resumed settings: its sites still evaluate
        (RoundRecord(1, central=SCORES), False, 1.0, True),
        # skipped (evaluate-every) and still not due
        (RoundRecord(1), False, 1.0, False),
        # skipped, now due (the resumed run's last round): central validation, with or without the sites
        (RoundRecord(1), True, 1.0, True),
        (RoundRecord(1), True, 0.0, True),
    ],
)
def test_the_resumed_round_lacks_what_it_did_not_finish(record, due, fraction_evaluate, lacking):
    assert lacks_evaluation(record, due, fraction_evaluate) is lacking


def test_a_history_row_written_before_the_finished_flag_counts_site_metrics_as_finished():
    evaluated = RoundRecord.from_json({"round": 2, "central": SCORES, "site-evaluation": SITE})
    unevaluated = RoundRecord.from_json({"round": 2, "central": SCORES, "site-evaluation": {}})
    assert evaluated.site_evaluation_finished and not unevaluated.site_evaluation_finished
    assert RoundRecord.from_json(RoundRecord(3, site_evaluation_finished=True).to_json()).site_evaluation_finished
