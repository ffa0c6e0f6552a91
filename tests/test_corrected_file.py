"""Importing a corrected file from the dashboard: the form, the review, one send, the record.

Carla (a clerk) downloads an import's kickouts, corrects the file and imports it from the task
page or a kickout group, through the same batch-mode form as a retry. The sandbox imports the
file over real HTTP and kicks out the rows its master data still cannot take.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from kickouts import corrected_files, energycap, follow_up, pages
from kickouts.corrected_file_models import CorrectedFile, RetrySource
from kickouts.models import Kind, Outcome, RetryAttempt, RetryInFlight, SourceSlot
from kickouts.queue_models import HandledReason, ImportSnapshot
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, KICKOUT_TASK_GUID, RUNNING_TASK_GUID

from .conftest import signed_in_client
from .corrected_helpers import (
    METER_NOT_FOUND,
    SELF_CONTAINED,
    csv_bytes,
    fix_meters,
    form_errors,
    form_url,
    kickout_rows,
    press,
    review,
    review_and_send,
    send,
    xlsx_bytes,
    zip_bytes,
)
from .retry_helpers import post_retry
from .test_uploads import peak_of, ten_mb_csv

TASK = KICKOUT_TASK_GUID


def the_attempt() -> RetryAttempt:
    return RetryAttempt.objects.select_related("corrected_file").get(kind=Kind.CORRECTED_FILE)


def fixed_file(sandbox, guid: str = TASK) -> bytes:
    return csv_bytes(fix_meters(kickout_rows(sandbox, guid), sandbox))


# --- starting from the work ----------------------------------------------------------------


def test_a_task_page_with_kickouts_leads_to_the_form_for_that_import(
    clerk_client, outsider_client, sandbox
):
    """Carla sees "Import a corrected file" on an import with kickouts; Nora (no role) not."""
    page = clerk_client.get(reverse("task_detail", args=[TASK])).content.decode()
    assert f"{reverse('corrected_file_form')}?task={TASK}" in page
    assert (
        "Import a corrected file"
        not in outsider_client.get(reverse("task_detail", args=[TASK])).content.decode()
    )
    running = clerk_client.get(reverse("task_detail", args=[RUNNING_TASK_GUID]))
    assert "Import a corrected file" not in running.content.decode()


def test_the_form_names_its_sources_and_prefills_the_note_with_their_numbers(clerk_client, sandbox):
    """The form lists the import's kickouts, the profiles, and the note names the import."""
    response = clerk_client.get(form_url(TASK))
    assert response.status_code == 200
    form = response.context["form"]
    (source,) = response.context["usable"]
    assert form.initial["import_note"] == f"Corrected file for {source.label}"
    assert source.rows == 12 and dict(source.messages)[METER_NOT_FOUND] == 4
    assert [code for code, _ in form.fields["profile"].choices] == [
        "",
        "STD-BILL",
        "EDI-810",
        "PORTAL",
    ]
    page = response.content.decode()
    assert "Meter not found for account (4)" in page
    # The file input comes last in the form: the upload limit keeps what comes before it.
    form_html = page[page.index('id="corrected-file-form"') :]
    form_html = form_html[: form_html.index("</form>")]
    assert form_html.rindex('name="file"') > form_html.rindex('name="import_note"')
    assert form_html.index('name="action"') < form_html.index('name="file"')


def test_an_import_without_kickouts_or_one_still_running_is_left_out_and_says_why(
    clerk_client, sandbox
):
    """Only ended imports with kickouts can be corrected; the page says why for the others."""
    response = clerk_client.get(form_url(RUNNING_TASK_GUID))
    assert response.status_code == 409
    assert "still running" in response.content.decode()
    both = clerk_client.get(form_url(TASK, RUNNING_TASK_GUID))
    assert [s.guid for s in both.context["usable"]] == [TASK]
    assert "left out: it is still running" in both.content.decode()


def test_the_profile_list_failing_leaves_the_advanced_format_and_says_why(clerk_client, sandbox):
    """EnergyCAP's profiles do not answer: only the Advanced format, with the reason; a file
    reviewed meanwhile is sent without a profileCode, and a chosen profile is refused."""
    sandbox.fault("import_profiles", *[{"status": 503}] * 3)
    response = clerk_client.get(form_url(TASK))
    form = response.context["form"]
    assert form.fields["profile"].choices == [("", "EnergyCAP's Advanced format")]
    assert "import profiles could not be loaded" in response.content.decode()

    sandbox.fault("import_profiles", *[{"status": 503}] * 3)
    chose = review(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox), profile="STD-BILL")
    assert "profiles could not be loaded" in " ".join(form_errors(chose)["profile"])
    sandbox.fault("import_profiles", *[{"status": 503}] * 6)
    assert (
        review_and_send(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox)).status_code == 302
    )
    (entry,) = sandbox.log("import_post")
    assert "profileCode" not in entry["body"]
    assert the_attempt().corrected_file.profile_label == "EnergyCAP's Advanced format"


# --- each file type, reviewed and sent once -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("November fixed.csv", "csv"),
        ("November fixed.txt", "txt"),
        ("November fixed.dat", "dat"),
        ("November fixed.xlsx", "xlsx"),
        ("November fixed.zip", "zip"),
    ],
)
def test_each_file_type_is_reviewed_then_imported_once_with_its_sources_marked(
    clerk, clerk_client, sandbox, name, kind
):
    """CSV, TXT, DAT, XLSX and ZIP: reviewed, sent once, the four meter rows imported."""
    rows = fix_meters(kickout_rows(sandbox, TASK), sandbox)
    data = {
        "csv": lambda: csv_bytes(rows),
        "txt": lambda: csv_bytes(rows, delimiter="\t"),
        "dat": lambda: csv_bytes(rows, delimiter="|"),
        "xlsx": lambda: xlsx_bytes(rows),
        "zip": lambda: zip_bytes(
            {"part1.csv": csv_bytes(rows[:6]), "part2.xlsx": xlsx_bytes(rows[6:])}
        ),
    }[kind]()
    sent = review_and_send(clerk_client, [TASK], name, data, import_note="Meters given")
    attempt = the_attempt()
    assert sent.status_code == 302 and sent["Location"] == attempt.get_absolute_url()
    assert attempt.outcome == Outcome.SUBMITTED and attempt.requested_by == clerk
    (entry,) = sandbox.log("import_post")
    assert entry["body"]["fileName"] == name
    assert entry["body"]["data"] == f"<base64 of {len(base64.b64encode(data))} characters>"
    assert entry["body"]["batchSettings"] == {"batchMode": SELF_CONTAINED}
    assert entry["body"]["importNote"] == "Meters given"
    # The record: what was asked, the exact body (data by its size), the file as sent.
    assert attempt.payload == {
        "fileName": name,
        "data": f"<base64 of {len(data)} bytes>",
        "batchSettings": {"batchMode": SELF_CONTAINED},
        "importNote": "Meters given",
    }
    stored = attempt.corrected_file
    assert (stored.name, stored.size, stored.kind) == (name, len(data), kind)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.rows == 12
    with stored.file.open("rb") as handle:
        assert handle.read() == data
    assert [s.task_guid for s in attempt.sources.all()] == [TASK]
    assert ImportSnapshot.objects.get(task_guid=TASK).handled_reason == HandledReason.CORRECTED_FILE
    assert energycap.client().get_task(attempt.new_task_guid).task_note == "Meters given"


def test_the_review_shows_the_file_its_first_rows_and_the_exact_body(clerk_client, sandbox):
    """Name, size, sha256, rows, the first rows as a table, the profile, the sentence and
    the body with `data` shown by its size; nothing is sent yet."""
    data = fixed_file(sandbox)
    response = review(clerk_client, [TASK], "fixed.csv", data, profile="STD-BILL")
    assert response.context["confirming"], form_errors(response)
    page = response.content.decode()
    assert "fixed.csv" in page and hashlib.sha256(data).hexdigest() in page
    assert "12 bill rows" in page
    assert "Standard Bill Import (STD-BILL)" in page
    assert (
        "EnergyCAP will make a new batch named an automatic code, add the file&#x27;s bills and "
        "close it" in page
    )
    assert f"&lt;base64 of {len(data)} bytes&gt;" in page
    assert "&quot;profileCode&quot;: &quot;STD-BILL&quot;" in page
    assert '<th scope="col">Kickout Message</th>' in page
    assert sandbox.count("import_post") == 0


def test_the_reviewed_file_is_kept_in_storage_not_in_the_session(clerk_client, sandbox, media_root):
    """Between the review and the send the file waits in Django's storage, keyed by the
    form's token; the session holds nothing of it, and the send reads it back."""
    token = uuid.uuid4()
    data = fixed_file(sandbox)
    review(clerk_client, [TASK], "fixed.csv", data, token=token)
    kept = CorrectedFile.objects.get(form_token=token)
    assert kept.retry is None
    stored = Path(media_root) / kept.file.name
    assert stored.read_bytes() == data and kept.file.name.startswith("corrected-files/")
    assert "fixed" not in kept.file.name  # stored under the token, not the browser's name
    session = clerk_client.session
    assert all(len(str(value)) < 200 for _, value in session.items())
    # "Change the settings" and review again without choosing the file: it is still there.
    again = review(clerk_client, [TASK], None, None, token=token, import_note="second look")
    assert again.context["confirming"], form_errors(again)
    assert send(clerk_client, [TASK], token).status_code == 302
    kept.refresh_from_db()
    assert kept.retry == the_attempt() and stored.read_bytes() == data


def test_a_second_file_for_the_same_form_replaces_the_first(clerk_client, sandbox, media_root):
    """Choosing another file before sending keeps only the new one."""
    token = uuid.uuid4()
    review(clerk_client, [TASK], "first.csv", fixed_file(sandbox), token=token)
    first = CorrectedFile.objects.get(form_token=token)
    review(clerk_client, [TASK], "second.csv", csv_bytes(kickout_rows(sandbox, TASK)), token=token)
    second = CorrectedFile.objects.get(form_token=token)
    assert second.name == "second.csv"
    assert not (Path(media_root) / first.file.name).exists() or first.file.name == second.file.name
    assert CorrectedFile.objects.count() == 1


def test_a_profile_is_sent_as_its_code(clerk_client, sandbox):
    """The same rows under STD-BILL's column names, imported with that profile."""
    profile = {
        "Account Code": "Account Number",
        "Meter Code": "Meter Number",
        "Vendor Code": "Vendor",
        "Bill Start Date": "Service Start",
        "Bill End Date": "Service End",
        "Total Cost": "Amount Due",
        "Line Item Total": "Charges Total",
    }
    rows = [
        {profile.get(k, k): v for k, v in row.items()}
        for row in fix_meters(kickout_rows(sandbox, TASK), sandbox)
    ]
    data = csv_bytes(rows, columns=list(profile.values()))
    review_and_send(clerk_client, [TASK], "std.csv", data, profile="STD-BILL")
    (entry,) = sandbox.log("import_post")
    assert entry["body"]["profileCode"] == "STD-BILL"
    attempt = the_attempt()
    assert attempt.corrected_file.profile_code == "STD-BILL"
    assert attempt.outcome == Outcome.SUBMITTED


def test_double_clicking_send_sends_once(clerk_client, sandbox):
    """The form's one-time token: the second Send shows what the first did."""
    token = uuid.uuid4()
    review(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox), token=token)
    first = send(clerk_client, [TASK], token)
    second = send(clerk_client, [TASK], token)
    assert first["Location"] == second["Location"] == the_attempt().get_absolute_url()
    assert sandbox.count("import_post") == 1


def test_more_than_five_thousand_rows_needs_an_explicit_confirmation(clerk_client, sandbox):
    """EnergyCAP advises 5,000 rows at most: a larger file is imported only when confirmed."""
    row = fix_meters(kickout_rows(sandbox, TASK), sandbox)[0]
    data = csv_bytes([row] * 5001)
    token = uuid.uuid4()
    response = review(clerk_client, [TASK], "month.csv", data, token=token)
    errors = form_errors(response)["confirm_rows"]
    assert "5,001 rows" in errors[0] and "at most 5,000" in errors[0]
    assert sandbox.count("import_post") == 0
    confirmed = review(clerk_client, [TASK], None, None, token=token, confirm_rows=True)
    assert confirmed.context["confirming"], form_errors(confirmed)
    assert send(clerk_client, [TASK], token, confirm_rows=True).status_code == 302
    assert sandbox.count("import_post") == 1


# --- the batch-mode rules are the retry's ------------------------------------------------


def test_the_batch_mode_rules_are_the_retry_forms(clerk_client, sandbox):
    """Pending batch without a batch, smart batch without a code: the retry's messages, on
    their fields, and the file is kept beside them."""
    token = uuid.uuid4()
    pending = review(
        clerk_client,
        [TASK],
        "fixed.csv",
        fixed_file(sandbox),
        token=token,
        batch_mode="use pending batch",
    )
    assert form_errors(pending)["pending_batch_id"] == [
        "Choose the pending batch the bills go into."
    ]
    assert "Kept from your last review" in pending.content.decode()
    smart = review(clerk_client, [TASK], None, None, token=token, batch_mode="smart batch")
    assert "Smart batch needs a batch code" in form_errors(smart)["new_batch_code"][0]
    comment = review(clerk_client, [TASK], None, None, token=token, comment="why")
    assert "only sent with Save as resolved" in form_errors(comment)["comment"][0]
    assert sandbox.count("import_post") == 0


def test_choosing_a_mode_with_htmx_swaps_in_that_modes_fields(clerk_client, sandbox):
    """The retry form's mode fields partial, served for the corrected-file form."""
    response = clerk_client.post(
        reverse("corrected_file_form"),
        {"action": "choose", "task": TASK, "batch_mode": "use pending batch"},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="mode-fields"')
    assert 'name="pending_batch_id"' in body and 'name="new_batch_code"' not in body


# --- duplicates, per source, whatever their kind ------------------------------------------


def test_the_same_file_again_needs_a_supervisor_who_confirms_naming_the_earlier_import(
    clerk_client, supervisor_client, sandbox
):
    """Carla imported fixed.csv; sending the same bytes again is refused to her and needs Sam's
    explicit confirmation naming her import. A different file needs none."""
    data = fixed_file(sandbox)
    review_and_send(clerk_client, [TASK], "fixed.csv", data)
    earlier = the_attempt()

    again = review(clerk_client, [TASK], "fixed-again.csv", data)
    refusal = " ".join(again.context["form"].non_field_errors())
    assert "was already imported for Import" in refusal and f"retry #{earlier.pk}" in refusal
    assert "Only a supervisor can import it again." in refusal

    token = uuid.uuid4()
    unconfirmed = review(supervisor_client, [TASK], "fixed.csv", data, token=token)
    assert "Tick this box" in form_errors(unconfirmed)["confirm_duplicate"][0]
    assert f'name="duplicate_of" value="{earlier.pk}"' in unconfirmed.content.decode()
    confirmed = review(
        supervisor_client,
        [TASK],
        None,
        None,
        token=token,
        duplicate_of=earlier.pk,
        confirm_duplicate=True,
    )
    assert confirmed.context["confirming"], form_errors(confirmed)
    send(supervisor_client, [TASK], token, duplicate_of=earlier.pk, confirm_duplicate=True)
    repeat = RetryAttempt.objects.latest("id")
    assert repeat.confirmed_duplicate_of == earlier
    assert repeat.sources.get().duplicate_sequence == 1

    other = csv_bytes(kickout_rows(sandbox, TASK))  # another file: no confirmation
    assert review_and_send(clerk_client, [TASK], "other.csv", other).status_code == 302
    latest = RetryAttempt.objects.latest("id")
    assert latest.outcome == Outcome.SUBMITTED and latest.confirmed_duplicate_of is None
    assert latest.sources.get().duplicate_sequence == 2
    assert sandbox.count("import_post") == 3


def test_a_file_for_an_import_whose_re_import_answer_was_lost_needs_a_supervisor(
    clerk_client, supervisor_client, sandbox, settings
):
    """Carla's re-import lost its answer (EnergyCAP may have imported the bills). A corrected
    file holding those bills is refused to her until a supervisor settles it, and Sam may
    send it only by confirming, naming the lost retry. Seen by hand: it went straight out."""
    settings.ENERGYCAP_READ_TIMEOUT = 1
    sandbox.fault("kickout_post", {"hang": 3, "apply": True})
    post_retry(clerk_client, TASK, action="send", batch_mode=SELF_CONTAINED)
    lost = RetryAttempt.objects.get(kind=Kind.REIMPORT)
    assert lost.outcome == Outcome.UNKNOWN

    data = fixed_file(sandbox)
    refused = review(clerk_client, [TASK], "fixed.csv", data)
    refusal = " ".join(refused.context["form"].non_field_errors())
    assert f"retry #{lost.pk}) and EnergyCAP's answer was lost" in refusal
    assert "Only a supervisor can import it again." in refusal

    token = uuid.uuid4()
    unconfirmed = review(supervisor_client, [TASK], "fixed.csv", data, token=token)
    assert "Tick this box" in form_errors(unconfirmed)["confirm_duplicate"][0]
    send(supervisor_client, [TASK], token, duplicate_of=lost.pk, confirm_duplicate=True)
    sent = RetryAttempt.objects.latest("id")
    assert sent.kind == Kind.CORRECTED_FILE and sent.outcome == Outcome.SUBMITTED
    assert sent.confirmed_duplicate_of == lost
    assert sandbox.count("import_post") == 1


def test_a_re_import_after_a_corrected_file_needs_the_duplicate_confirmation(clerk_client, sandbox):
    """Re-importing the kickouts a corrected file already imported would import bills twice:
    the re-import's own duplicate rule covers it, naming the corrected file."""
    review_and_send(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox))
    corrected = the_attempt()
    refused = post_retry(clerk_client, TASK, action="send", batch_mode=SELF_CONTAINED)
    refusal = " ".join(refused.context["form"].non_field_errors())
    assert "from the corrected file fixed.csv" in refusal and f"retry #{corrected.pk}" in refusal
    assert sandbox.count("kickout_post") == 0


def test_one_file_for_several_imports_of_a_group_records_each_source(clerk, clerk_client, sandbox):
    """From a kickout group: one file for two imports; both are its sources and both leave
    the queue as "corrected file imported"."""
    other = sandbox.add_task(kickout_messages=[METER_NOT_FOUND], rows_per_message=2)
    other_guid = other["taskGUId"].lower()
    rows = fix_meters(kickout_rows(sandbox, TASK) + kickout_rows(sandbox, other_guid), sandbox)
    opened = clerk_client.post(reverse("corrected_file_form"), {"task": [TASK, other_guid]})
    assert opened.status_code == 200
    assert [s.guid for s in opened.context["usable"]] == [TASK, other_guid]
    note = opened.context["form"].initial["import_note"]
    assert note.startswith("Corrected file for Import ") and " and Import " in note
    review_and_send(clerk_client, [TASK, other_guid], "both.csv", csv_bytes(rows))
    attempt = the_attempt()
    assert attempt.source_guids == [TASK, other_guid]
    assert attempt.source_task_guid == TASK
    for guid in (TASK, other_guid):
        snapshot = ImportSnapshot.objects.get(task_guid=guid)
        assert snapshot.handled_reason == HandledReason.CORRECTED_FILE
    summary = RetryAttempt.objects.summary_by_source([TASK, other_guid])
    assert summary[other_guid].latest_pk == attempt.pk


def test_the_group_page_offers_a_corrected_file_for_the_ticked_imports(clerk_client, sandbox):
    """The kickout group's form has the second action beside "Retry selected"."""
    call_command("snapshot_kickouts", "--days", "30")
    page = clerk_client.get(reverse("queue_group"), {"message": METER_NOT_FOUND}).content.decode()
    assert "Retry selected" in page
    assert f'formaction="{reverse("corrected_file_form")}"' in page


# --- what EnergyCAP answered -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "outcome", "words"),
    [
        ({"status": 400}, Outcome.REJECTED, "Bad Request (sandbox fault)"),
        ({"status": 503}, Outcome.REJECTED, "did not take the request"),
        ({"status": 500}, Outcome.UNKNOWN, "never re-sent"),
        ({"drop": True}, Outcome.UNKNOWN, "never re-sent"),
    ],
)
def test_each_answer_is_classified_by_the_re_imports_table(
    clerk_client, sandbox, fault, outcome, words
):
    """Refused, or outcome unknown: the same verdicts as the re-import, never re-sent; the
    source stays in the queue unless the import may have started."""
    sandbox.fault("import_post", fault)
    review_and_send(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox))
    attempt = the_attempt()
    assert attempt.outcome == outcome and words in attempt.upstream_message
    assert attempt.sources.get().outcome == outcome  # the sources' copy follows
    assert sandbox.count("import_post") == 1
    assert attempt.follow is None
    page = clerk_client.get(attempt.get_absolute_url()).content.decode()
    if outcome == Outcome.REJECTED:
        assert "EnergyCAP refused the corrected-file import" in page
        assert attempt.try_again_url.replace("&", "&amp;") in page


def test_an_outcome_unknown_is_settled_from_the_task_list_like_a_retry(
    clerk_client, supervisor_client, sandbox, settings
):
    """The answer is lost after EnergyCAP started the import: Sam links the import the task
    list shows; it is followed and the source leaves the queue as "corrected file imported"."""
    settings.ENERGYCAP_READ_TIMEOUT = 0.5
    sandbox.fault("import_post", {"hang": 1.5, "apply": True})
    review_and_send(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox))
    attempt = the_attempt()
    assert attempt.outcome == Outcome.UNKNOWN
    page = supervisor_client.get(attempt.get_absolute_url())
    (candidate,) = [c for c in page.context["candidates"] if c.likely]
    supervisor_client.post(
        reverse("reconcile_retry", args=[attempt.pk]),
        {"action": "link", "task_guid": candidate.task.guid, "note": "the file import"},
    )
    attempt.refresh_from_db()
    assert attempt.outcome == Outcome.SUBMITTED
    assert attempt.new_task_guid == candidate.task.guid
    assert attempt.follow_up.task_guid == candidate.task.guid
    assert attempt.sources.get().outcome == Outcome.SUBMITTED
    snapshot = ImportSnapshot.objects.get(task_guid=TASK)
    assert snapshot.handled_reason == HandledReason.CORRECTED_FILE


def test_a_failed_import_with_nothing_imported_puts_its_sources_back_in_the_queue(
    clerk_client, sandbox
):
    """The new import ends "Failed" with no bill: nothing was imported, the source is open
    again, and another corrected file needs no confirmation."""
    sandbox.configure(next_outcomes=["Failed"])
    review_and_send(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox))
    attempt = the_attempt()
    sandbox.update_task(attempt.new_task_guid, status="Failed")
    follow_up.sweep()  # the worker's sweep, run here: ask, then report
    follow_up.FollowUp.objects.filter(pk=attempt.pk).update(due_at=timezone.now())
    follow_up.sweep()
    attempt.refresh_from_db()
    assert attempt.comparison.state == "failed"
    assert attempt.outcome == Outcome.NONE_IMPORTED
    assert attempt.sources.get().outcome == Outcome.NONE_IMPORTED
    assert ImportSnapshot.objects.get(task_guid=TASK).handled_reason == ""
    again = review(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox))
    assert again.context["confirming"], form_errors(again)


# --- the file, downloaded ------------------------------------------------------------------


def test_the_requester_and_supervisors_download_exactly_what_was_sent(
    clerk_client, supervisor_client, sandbox, other_clerk, outsider_client
):
    """Carla and Sam get the bytes with a safe attachment name; Oscar and Nora get a 404."""
    data = fixed_file(sandbox)
    review_and_send(clerk_client, [TASK], "Nov fixed ünits.csv", data)
    url = reverse("corrected_file_download", args=[the_attempt().pk])
    for client in (clerk_client, supervisor_client):
        response = client.get(url)
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == data
        assert response["Content-Type"] == "application/octet-stream"
        disposition = response["Content-Disposition"]
        assert disposition.startswith("attachment;")
        assert "filename*=utf-8''Nov%20fixed%20%C3%BCnits.csv" in disposition
    assert signed_in_client(other_clerk).get(url).status_code == 404
    assert outsider_client.get(url).status_code == 404
    retry = RetryAttempt.objects.create(
        requested_by=the_attempt().requested_by,
        form_token=uuid.uuid4(),
        source_task_guid=API_USER_KICKOUT_TASK_GUID,
        batch_mode=SELF_CONTAINED,
        payload={},
        outcome=Outcome.REJECTED,
    )
    assert clerk_client.get(reverse("corrected_file_download", args=[retry.pk])).status_code == 404


# --- one history -----------------------------------------------------------------------


def test_the_history_shows_the_kind_the_file_and_filters_by_kind(
    clerk, clerk_client, supervisor_client, sandbox
):
    """Corrected files beside retries: a Kind column with the file, a filter, CSV columns."""
    post_retry(clerk_client, API_USER_KICKOUT_TASK_GUID, action="send", batch_mode=SELF_CONTAINED)
    data = fixed_file(sandbox)
    review_and_send(clerk_client, [TASK], "fixed.csv", data)
    corrected = the_attempt()
    page = supervisor_client.get(reverse("history")).content.decode()
    assert '<th scope="col">Kind</th>' in page
    assert "Re-import" in page and "Corrected file" in page
    assert reverse("corrected_file_download", args=[corrected.pk]) in page
    only = supervisor_client.get(reverse("history"), {"kind": "corrected_file"})
    assert [r.pk for r in only.context["page"].retries] == [corrected.pk]
    reimports = supervisor_client.get(reverse("history"), {"kind": "reimport"})
    assert corrected.pk not in [r.pk for r in reimports.context["page"].retries]
    csv_text = b"".join(
        supervisor_client.get(reverse("history_csv"), {"kind": "corrected_file"}).streaming_content
    ).decode("utf-8-sig")
    header, line = csv_text.splitlines()[:2]
    columns = dict(zip(header.split(","), line.split(","), strict=True))
    assert columns["kind"] == "corrected_file" and columns["file_name"] == "fixed.csv"
    assert columns["file_bytes"] == str(len(data))
    assert columns["file_sha256"] == hashlib.sha256(data).hexdigest()


def test_the_task_pages_chain_shows_the_corrected_file(clerk_client, sandbox):
    """The source's page lists the corrected file in its chain, by name."""
    review_and_send(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox))
    attempt = the_attempt()
    page = clerk_client.get(reverse("task_detail", args=[TASK])).content.decode()
    assert f"corrected file #{attempt.pk} (fixed.csv)</a>" in page
    retry_page = clerk_client.get(attempt.get_absolute_url()).content.decode()
    assert f"Corrected file #{attempt.pk} for Import" in retry_page
    assert "fixed.csv" in retry_page and attempt.corrected_file.sha256 in retry_page


# --- unsent uploads are cleaned ------------------------------------------------------------


def test_unsent_uploads_are_deleted_after_their_lifetime_and_sent_files_are_kept(
    clerk_client, sandbox, media_root, settings
):
    """A file reviewed and never sent is deleted (row and stored file) after
    CORRECTED_FILE_UNSENT_HOURS; a sent one stays with its record."""
    review_and_send(clerk_client, [TASK], "sent.csv", fixed_file(sandbox))
    review(clerk_client, [TASK], "forgotten.csv", csv_bytes(kickout_rows(sandbox, TASK)))
    forgotten = CorrectedFile.objects.get(name="forgotten.csv")
    sent = CorrectedFile.objects.get(name="sent.csv")
    call_command("prune_corrected_files")
    assert CorrectedFile.objects.count() == 2  # too young
    CorrectedFile.objects.update(
        uploaded_at=timezone.now() - timedelta(hours=settings.CORRECTED_FILE_UNSENT_HOURS + 1)
    )
    call_command("prune_corrected_files")
    assert list(CorrectedFile.objects.all()) == [sent]
    assert not (Path(media_root) / forgotten.file.name).exists()
    assert (Path(media_root) / sent.file.name).exists()


def test_a_send_after_the_upload_was_pruned_says_to_choose_the_file_again(clerk_client, sandbox):
    """Nothing is sent, and the form says why."""
    token = uuid.uuid4()
    review(clerk_client, [TASK], "fixed.csv", fixed_file(sandbox), token=token)
    CorrectedFile.objects.update(uploaded_at=timezone.now() - timedelta(days=3))
    call_command("prune_corrected_files")
    response = send(clerk_client, [TASK], token)
    assert response.status_code == 200
    assert "no longer kept" in response.content.decode()
    assert sandbox.count("import_post") == 0


# --- the record stays small ---------------------------------------------------------------


def test_the_retry_record_stays_within_thirty_two_fields():
    """Issue 21: the file and its sources are records of their own."""
    assert len(RetryAttempt._meta.concrete_fields) <= 32
    assert {f.name for f in RetrySource._meta.concrete_fields} >= {"task_guid", "outcome"}


# --- two clerks, one file, one source: one import ------------------------------------------


def test_a_clerk_whose_form_was_checked_before_another_sent_the_same_file_is_refused(
    clerk, other_clerk, clerk_client, sandbox
):
    """Oscar's send was checked (nothing imported yet) just before Carla's went through: his
    record claims the same place in the source's sequence, and the database refuses it."""
    data = fixed_file(sandbox)
    token = uuid.uuid4()
    review(signed_in_client(other_clerk), [TASK], "fixed.csv", data, token=token)
    page = pages.load_corrected_file_page([TASK])
    posted = {"form_token": str(token), "batch_mode": SELF_CONTAINED, "task": TASK}
    oscars = corrected_files.build_form(posted, user=other_clerk, token=token, page=page)
    assert oscars.is_valid(), oscars.errors

    review_and_send(clerk_client, [TASK], "fixed.csv", data)  # Carla's, answered meanwhile
    with pytest.raises(RetryInFlight) as refused:
        corrected_files.submit_corrected_file(
            user=other_clerk, form=oscars, sources=page.usable_sources
        )
    assert refused.value.attempt.outcome == Outcome.NOT_SENT
    assert "another import of these kickouts" in refused.value.attempt.upstream_message
    assert sandbox.count("import_post") == 1
    assert RetryAttempt.objects.filter(outcome=Outcome.SUBMITTED).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_clerks_sending_the_same_file_for_the_same_import_at_once_import_it_once(
    clerk, other_clerk, sandbox
):
    """Carla and Oscar reviewed the same corrected file and press Send at the same moment:
    EnergyCAP sees one import. The other request gets a clean "not sent" record when both
    passed the form's checks before either was recorded (the database refuses the second), or
    the form's refusal naming the first when that one was recorded first (seen in CI under
    load); either way nothing more is sent."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's concurrency; `make test` runs this on PostgreSQL")
    data = fixed_file(sandbox)
    clients = [signed_in_client(clerk), signed_in_client(other_clerk)]
    tokens = [uuid.uuid4(), uuid.uuid4()]
    for client, token in zip(clients, tokens, strict=True):
        assert review(client, [TASK], "fixed.csv", data, token=token).context["confirming"]
    sandbox.fault("import_post", latency=0.3)
    barrier = threading.Barrier(2)
    responses = []

    def press_send(client, token):
        barrier.wait()
        try:
            responses.append(send(client, [TASK], token))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=press_send, args=pair) for pair in zip(clients, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sandbox.count("import_post") == 1
    outcomes = sorted(RetryAttempt.objects.values_list("outcome", flat=True))
    assert RetrySource.objects.filter(task_guid=TASK, outcome=Outcome.SUBMITTED).count() == 1
    statuses = sorted(response.status_code for response in responses)
    if statuses == [302, 302]:
        assert outcomes == [Outcome.NOT_SENT, Outcome.SUBMITTED]
    else:
        assert statuses == [200, 302]
        assert outcomes == [Outcome.SUBMITTED]
        [refused] = [r for r in responses if r.status_code == 200]
        body = " ".join(refused.content.decode().split())
        first = RetryAttempt.objects.get()
        # The form names the first import, or says one was made since the review.
        named = f"(retry #{first.pk}," in body or "since this form was opened" in body
        assert named, body[:2000]


def test_a_re_import_of_an_import_a_corrected_file_is_being_sent_for_is_refused(
    clerk, other_clerk, sandbox
):
    """The per-source rules hold for every source, not only the first: while a corrected
    file for imports A and B is being sent, a re-import of B is refused by the database."""
    a, b = (str(uuid.uuid4()) for _ in range(2))
    in_flight = RetryAttempt.start(
        kind=Kind.CORRECTED_FILE,
        user=clerk,
        form_token=uuid.uuid4(),
        source_task=_Imported(a, 1),
        batch_mode=SELF_CONTAINED,
        batch_code="",
        import_note="",
        payload={},
        sources=[SourceSlot(a, 1), SourceSlot(b, 2)],
    )
    assert in_flight.outcome == Outcome.SUBMITTING
    with pytest.raises(RetryInFlight) as refused:
        RetryAttempt.start(
            user=other_clerk,
            form_token=uuid.uuid4(),
            source_task=_Imported(b, 2),
            batch_mode=SELF_CONTAINED,
            batch_code="",
            import_note="",
            payload={},
        )
    assert refused.value.attempt.outcome == Outcome.NOT_SENT
    # Once the file's import is answered, B's next import must follow it in B's sequence.
    in_flight.mark_submitted(str(uuid.uuid4()))
    with pytest.raises(RetryInFlight):
        RetryAttempt.start(
            user=other_clerk,
            form_token=uuid.uuid4(),
            source_task=_Imported(b, 2),
            batch_mode=SELF_CONTAINED,
            batch_code="",
            import_note="",
            payload={},
        )
    assert in_flight.sources.get(task_guid=b).outcome == Outcome.SUBMITTED


@dataclass(frozen=True)
class _Imported:
    guid: str
    task_id: int
    status: str = "Completed with kickouts"


def test_sending_a_ten_megabyte_file_needs_a_bounded_amount_of_memory(clerk, sandbox):
    """The send reads the stored file back and posts it: its base64 text, the JSON body and
    the bytes on the wire are each 4/3 of the file (about 4 times its size in all, measured);
    never the file's bytes held whole, nor a copy per step beyond those."""
    data = ten_mb_csv()
    token = uuid.uuid4()
    client = signed_in_client(clerk)
    assert review(client, [TASK], "month.csv", data, token=token, confirm_rows=True).context[
        "confirming"
    ]
    page = pages.load_corrected_file_page([TASK])
    posted = {"form_token": str(token), "batch_mode": SELF_CONTAINED, "confirm_rows": "on"}
    form = corrected_files.build_form(posted, user=clerk, token=token, page=page)
    assert form.is_valid(), form.errors
    attempt, peak = peak_of(
        lambda: corrected_files.submit_corrected_file(
            user=clerk, form=form, sources=page.usable_sources
        )
    )
    assert attempt.outcome == Outcome.SUBMITTED
    (entry,) = sandbox.log("import_post")
    assert entry["body"]["data"] == f"<base64 of {len(base64.b64encode(data))} characters>"
    assert peak < 5 * len(data), f"{peak / len(data):.2f} times the file's size"


def test_the_review_page_sends_exactly_what_was_reviewed_and_can_go_back_to_the_settings(
    clerk_client, supervisor_client, sandbox
):
    """Its own hidden fields carry the settings, the profile and every confirmation; "Change
    the settings" shows them in the form with the file kept."""
    data = fixed_file(sandbox)
    review_and_send(clerk_client, [TASK], "fixed.csv", data)
    earlier = the_attempt()
    token = uuid.uuid4()
    first = review(supervisor_client, [TASK], "fixed.csv", data, token=token, profile="PORTAL")
    reviewed = review(
        supervisor_client,
        [TASK],
        None,
        None,
        token=token,
        profile="PORTAL",
        import_note="Again, on purpose",
        duplicate_of=first.context["form"].earlier_retry.pk,
        confirm_duplicate=True,
    )
    assert reviewed.context["confirming"], form_errors(reviewed)
    back = press(supervisor_client, reviewed, "edit")
    page = back.content.decode()
    assert "Kept from your last review: <strong>fixed.csv</strong>" in page
    assert "Again, on purpose</textarea>" in page and '<option value="PORTAL" selected>' in page
    sent = press(supervisor_client, reviewed, "send")
    repeat = RetryAttempt.objects.latest("id")
    assert sent["Location"] == repeat.get_absolute_url()
    assert repeat.confirmed_duplicate_of == earlier
    assert repeat.payload["profileCode"] == "PORTAL"
    assert repeat.import_note == "Again, on purpose"
    assert sandbox.log("import_post")[-1]["body"]["profileCode"] == "PORTAL"


def test_a_send_that_cannot_check_every_reviewed_import_again_sends_nothing(clerk_client, sandbox):
    """Reviewed for two imports; at the send one cannot be looked at (EnergyCAP fails and its
    kickouts are not stored): nothing is sent for fewer imports than were shown."""
    other = sandbox.add_task(kickout_messages=[METER_NOT_FOUND], rows_per_message=2)
    other_guid = other["taskGUId"].lower()
    rows = fix_meters(kickout_rows(sandbox, TASK) + kickout_rows(sandbox, other_guid), sandbox)
    token = uuid.uuid4()
    reviewed = review(clerk_client, [TASK, other_guid], "both.csv", csv_bytes(rows), token=token)
    assert reviewed.context["confirming"], form_errors(reviewed)
    ImportSnapshot.objects.filter(task_guid=other_guid).delete()
    sandbox.fault("task_get", *[{"status": 503}] * 3)
    response = send(clerk_client, [TASK, other_guid], token)
    assert response.status_code == 200
    assert "not every import the file was reviewed for could be checked again" in (
        response.content.decode()
    )
    assert sandbox.count("import_post") == 0
    assert not RetryAttempt.objects.exists()
