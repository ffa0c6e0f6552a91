"""The client's file import and profile list: over real HTTP against the sandbox, and their
parsing with `responses` where only the shape of an answer matters."""

from __future__ import annotations

import base64

import pytest
import responses

from kickouts.energycap import REIMPORT_ANSWERS, EnergyCap, Unauthorized, Unavailable, Verdict
from kickouts.payloads import ImportProfile
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID

from .test_reimport_answers import SANDBOX_ROWS

BASE = "https://ec.test"
FILE = b"Account Code,Meter Code,Vendor Code,Bill Start Date,Bill End Date,Total Cost\n"
BODY = {
    "fileName": "corrected.csv",
    "data": base64.b64encode(FILE + b"ACCT-1,MTR-1,CONED,2026-01-01,2026-01-31,10.00\n").decode(),
    "batchSettings": {"batchMode": "new self-contained batch"},
    "importNote": "Corrected file",
}


@pytest.fixture
def api(sandbox_process, settings) -> EnergyCap:
    return EnergyCap(sandbox_process.url, settings.ENERGYCAP_API_KEY, read_timeout=1.0)


def test_a_file_import_names_the_new_task_and_is_posted_once(api, sandbox):
    """EnergyCAP answers the new task's GUID; the body went out as the caller built it."""
    answer = api.import_bill(BODY)
    assert answer.verdict == Verdict.ACCEPTED and answer.new_task_guid
    assert api.get_task(answer.new_task_guid).task_note == "Corrected file"
    posts = sandbox.log("import_post")
    assert len(posts) == 1 and posts[0]["body"]["fileName"] == "corrected.csv"


def test_a_refused_file_import_carries_energycaps_message(api):
    """A 400 is a refusal, and EnergyCAP's words say what to change."""
    answer = api.import_bill({**BODY, "data": "not base64!"})
    assert answer.verdict == Verdict.REFUSED and answer.status_code == 400
    assert "data is not valid base64" in answer.message


@pytest.mark.parametrize("row", [r for r, fault in SANDBOX_ROWS.items() if fault is not None])
def test_each_answer_to_the_file_import_is_classified_as_the_re_imports_is(row, api, sandbox):
    """The same fault on either POST lands on the same row of one table, posted once each."""
    fault = SANDBOX_ROWS[row]
    sandbox.fault("kickout_post", fault)
    reimported = api.reimport_kickouts(
        API_USER_KICKOUT_TASK_GUID, {"batchSettings": BODY["batchSettings"]}
    )
    sandbox.fault("import_post", fault)
    imported = api.import_bill(BODY)
    assert imported.answer == reimported.answer == row
    assert imported.verdict == REIMPORT_ANSWERS[row][0]
    assert sandbox.count("import_post") == 1 and sandbox.count("kickout_post") == 1


def test_a_file_import_without_a_task_guid_says_so_in_its_own_words(api, sandbox):
    """A 2xx without a GUID: outcome unknown, naming the file import, not the re-import."""
    sandbox.fault("import_post", {"status": 200})
    answer = api.import_bill(BODY)
    assert answer.verdict == Verdict.UNKNOWN
    assert answer.message == "EnergyCAP accepted the file import but its answer had no task GUID."


def test_a_file_import_to_a_closed_port_was_not_sent(settings):
    """Nothing listening: not sent, so the clerk may simply try again."""
    answer = EnergyCap("http://127.0.0.1:9", settings.ENERGYCAP_API_KEY).import_bill(BODY)
    assert answer.verdict == Verdict.NOT_SENT


def test_the_profile_list_is_read_from_the_sandbox(api):
    """Each profile with its id, code and name, in EnergyCAP's order."""
    profiles = api.import_profiles()
    assert profiles[0] == ImportProfile(11, "STD-BILL", "Standard Bill Import")
    assert [p.code for p in profiles] == ["STD-BILL", "EDI-810", "PORTAL"]
    assert profiles[0].label == "Standard Bill Import (STD-BILL)"


def test_a_profile_list_that_fails_raises_a_typed_error_the_form_can_explain(api, sandbox):
    """Three 503s in a row (GETs are retried): Unavailable; a missing View permission: 401."""
    sandbox.fault("import_profiles", {"status": 503}, {"status": 503}, {"status": 503})
    with pytest.raises(Unavailable):
        api.import_profiles()
    sandbox.set_me(view=False)
    with pytest.raises(Unauthorized):
        api.import_profiles()


@responses.activate
def test_profiles_are_read_tolerantly_whatever_their_properties_are_called():
    """Other spellings are understood, unknown properties ignored, codeless entries left out."""
    responses.get(
        f"{BASE}/api/v3/import/bill/profile",
        json=[
            {"importProfileId": 3, "importProfileCode": "EDI", "importProfileName": "EDI feed"},
            {"id": "4", "code": "PORTAL", "extra": {"columns": [1, 2]}},
            {"profileId": 5, "profileCode": "  ", "profileName": "No code"},
            {"profileId": 6, "profileName": "No code at all"},
            {"ProfileCode": 77, "Name": None, "description": "Numeric code"},
            {"profileCode": "edi", "profileName": "The same code again"},
            "not an object",
            None,
        ],
    )
    profiles = EnergyCap(BASE, "k").import_profiles()
    assert profiles == [
        ImportProfile(3, "EDI", "EDI feed"),
        ImportProfile(4, "PORTAL", "PORTAL"),
        ImportProfile(None, "77", "Numeric code"),
    ]
    assert profiles[1].label == "PORTAL"


@responses.activate
def test_a_profile_answer_that_is_not_a_list_is_unavailable():
    """An object where a list was expected cannot be read as profiles."""
    responses.get(f"{BASE}/api/v3/import/bill/profile", json={"profiles": []})
    with pytest.raises(Unavailable, match="expected a list"):
        EnergyCap(BASE, "k").import_profiles()


@responses.activate
def test_an_empty_profile_list_is_no_error():
    """No profiles: the form offers the Advanced format alone."""
    responses.get(f"{BASE}/api/v3/import/bill/profile", json=[])
    assert EnergyCap(BASE, "k").import_profiles() == []
