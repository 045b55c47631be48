"""The trial page per method: which videos, in which order, under which labels; the numbering of
practice, test and gold trials; the questions; and what the page must never contain."""

from __future__ import annotations

import json
import re
import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import include, path
from django.utils import timezone

from generation.models import Clip, Condition
from studyapp import participant_urls
from studyapp.blinding import find_leaks, forbidden_for_study
from studyapp.models import PAIRWISE_LABELS, Assignment, Participant, Study, StudyClip
from studyapp.views.session import SESSION_KEY
from studyapp.views.trial import render_trial
from tests.fixtures import CONDITIONS, make_clip, make_study

# Fixture variants 0, 2 and 4 share a face and a sentence; variant 2 is their hidden reference.
SAME_CONTENT = (0, 2, 4)
REFERENCE_VARIANT = next(i for i, row in enumerate(CONDITIONS) if row[1] == Condition.KIND_REFERENCE)
TEST, PRACTICE, GOLD = StudyClip.ROLE_TEST, StudyClip.ROLE_PRACTICE, StudyClip.ROLE_GOLD


# ---- building trials without the planner: the study, its clips, a participant and their trials ----

def method_study(clip_files, method: str, variants=SAME_CONTENT, **fields) -> tuple[Study, dict[int, StudyClip]]:
    """A study of ``method`` whose clips are the fixture ``variants`` (by variant), each clip pointing
    at the hidden reference of its face and sentence, as the generation pipeline links them."""
    study = make_study(clip_files, n_clips=0, method=method, **fields)
    clips = {variant: make_clip(variant, clip_files) for variant in variants}
    reference = clips.get(REFERENCE_VARIANT)
    for clip in clips.values():
        if reference is not None and clip != reference and clip.source_id == reference.source_id:
            Clip.objects.filter(pk=clip.pk).update(reference=reference)
    return study, {variant: StudyClip.objects.create(study=study, clip=clip) for variant, clip in clips.items()}


def participant_with_trials(study: Study, trials, *, started: bool = True, external_id: str = "") -> Participant:
    """An admitted participant whose trials are ``trials``: (study clip, paired study clip or None, role)."""
    now = timezone.now()
    participant = Participant.objects.create(
        study=study, state=Participant.IN_PROGRESS, consented_at=now, started_at=now if started else None,
        last_seen_at=now, external_id=external_id,
    )
    for position, (study_clip, paired, role) in enumerate(trials):
        Assignment.objects.create(participant=participant, study_clip=study_clip, paired_study_clip=paired,
                                  role=role, position=position)
    return participant


def remembering_client(participant: Participant) -> Client:
    """A browser whose session is this participant's (as after the study link)."""
    client = Client()
    session = client.session
    session[SESSION_KEY] = {participant.study.public_id: participant.token}
    session.save()
    return client


def page_of(participant: Participant, position: int = 0) -> str:
    request = RequestFactory().get(f"/p/{participant.token}/")
    request.session = {}
    assignment = participant.assignments.get(position=position)
    response = render_trial(request, participant, assignment)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def videos_of(html: str) -> list[dict[str, str]]:
    """Every <video> with its attributes, in page order."""
    out = []
    for tag in re.findall(r"<video\b[^>]*>", html):
        attributes = dict(re.findall(r'\s([a-z-]+)="([^"]*)"', tag))
        attributes.update({name: "" for name in re.findall(r'\s([a-z-]+)(?=[\s>])', tag) if name not in attributes})
        out.append(attributes)
    return out


def config_of(html: str) -> dict:
    return json.loads(re.search(r'<script id="trial-config" type="application/json">(.*?)</script>', html).group(1))


def neutral(html: str, participant: Participant) -> str:
    """The page with everything that differs between participants and trials anyway made equal: tokens,
    signed URLs, the CSRF token."""
    html = html.replace(participant.token, "PARTICIPANT")
    for assignment in participant.assignments.all():
        html = html.replace(assignment.token, "ASSIGNMENT")
    html = re.sub(r"/m/[^\"']+", "/m/SIGNED", html)
    return re.sub(r'("csrf": "|name="csrfmiddlewaretoken" value=")[^"]+', r"\1CSRF", html)


# ---- the layouts ----

@pytest.mark.parametrize("method", [Study.METHOD_ACR, Study.METHOD_ACR_HR])
def test_an_acr_trial_shows_one_clip_and_nothing_to_compare_it_with(db, clip_files, method):
    study, clips = method_study(clip_files, method)
    html = page_of(participant_with_trials(study, [(clips[0], None, TEST)]))
    [video] = videos_of(html)
    assert video["id"] == "clip" and video["src"].startswith("/m/") and video["aria-label"] == "The clip to rate"
    assert "autoplay" not in video and "controls" not in video and "muted" not in video
    assert config_of(html)["layout"] == "single"
    assert "reference" not in html.lower() and 'id="show-b"' not in html
    assert html.count('type="radio"') == 15


def test_an_acr_hr_trial_of_the_hidden_reference_looks_like_any_other_trial(db, clip_files):
    study, clips = method_study(clip_files, Study.METHOD_ACR_HR)
    of_reference = participant_with_trials(study, [(clips[REFERENCE_VARIANT], None, TEST)])
    of_model = participant_with_trials(study, [(clips[0], None, TEST)])
    assert neutral(page_of(of_reference), of_reference) == neutral(page_of(of_model), of_model)


def test_a_dcr_trial_shows_the_reference_then_the_clip_each_labelled(db, clip_files):
    study, clips = method_study(clip_files, Study.METHOD_DCR)
    html = page_of(participant_with_trials(study, [(clips[4], None, TEST)]))
    reference, clip = videos_of(html)
    assert (reference["id"], clip["id"]) == ("reference", "clip")  # the order they play in
    assert reference["aria-label"] == "Reference clip" and clip["aria-label"] == "The clip to rate"
    assert reference["src"] != clip["src"] and "muted" not in reference and "muted" not in clip  # each with its sound
    captions = re.findall(r'<figcaption class="sequence__caption">.*?</span>(.*?)</figcaption>', html)
    assert captions == ["Reference", "Clip"]
    assert config_of(html)["layout"] == "sequence"
    assert "Very annoying" in html and "Imperceptible" in html  # the P.910 impairment scale


@pytest.mark.parametrize("reference", ["none", "failed"])
def test_a_dcr_trial_whose_clip_has_no_ready_reference_is_not_shown(db, clip_files, reference):
    if reference == "none":  # a face without a hidden reference
        study, clips = method_study(clip_files, Study.METHOD_DCR, variants=(1,))
        rated = clips[1]
    else:
        study, clips = method_study(clip_files, Study.METHOD_DCR)
        Clip.objects.filter(pk=clips[REFERENCE_VARIANT].clip_id).update(status=Clip.FAILED)
        rated = clips[0]
    participant = participant_with_trials(study, [(rated, None, TEST)])
    request = RequestFactory().get("/")
    request.session = {}
    response = render_trial(request, participant, participant.assignments.get())
    assert response.status_code == 503 and "<video" not in response.content.decode()


def test_a_pairwise_trial_shows_a_and_b_in_one_frame_with_a_switch(db, clip_files):
    study, clips = method_study(clip_files, Study.METHOD_PAIRWISE)
    html = page_of(participant_with_trials(study, [(clips[0], clips[4], TEST)]))
    a, b = videos_of(html)
    assert (a["id"], b["id"]) == ("clip", "clip-b") and (a["aria-label"], b["aria-label"]) == ("Clip A", "Clip B")
    assert "muted" not in a and "aria-hidden" not in a  # A is seen and heard first …
    assert "muted" in b and b["aria-hidden"] == "true" and b["class"] == "is-hidden"  # … B plays on, hidden
    assert html.count('class="player__stage stack"') == 1  # one frame for both
    show_a = re.search(r'<button[^>]*id="show-a"[^>]*>', html).group(0)
    show_b = re.search(r'<button[^>]*id="show-b"[^>]*>', html).group(0)
    assert 'aria-pressed="true"' in show_a and 'aria-keyshortcuts="A"' in show_a
    assert 'aria-pressed="false"' in show_b and 'aria-keyshortcuts="B"' in show_b
    assert config_of(html)["layout"] == "pair"
    for label in PAIRWISE_LABELS:  # the comparison scale, 1 = A much better … 5 = B much better
        assert html.count(f'<span class="option__label">{label}</span>') == 3
    assert re.search(r'value="1" required>\s*<span class="option__value">1</span>\s*'
                     r'<span class="option__label">A much better</span>', html)


@pytest.mark.parametrize("method", [Study.METHOD_ACR, Study.METHOD_ACR_HR, Study.METHOD_DCR, Study.METHOD_PAIRWISE])
def test_no_trial_page_names_a_condition_a_file_or_an_id(db, clip_files, method):
    study, clips = method_study(clip_files, method)
    trials = [(clips[0], clips[4], TEST), (clips[4], clips[REFERENCE_VARIANT], TEST)] \
        if method == Study.METHOD_PAIRWISE else [(clip, None, TEST) for clip in clips.values()]
    participant = participant_with_trials(study, trials)
    pages = [page_of(participant, position) for position in range(len(trials))]
    assert find_leaks(pages, forbidden_for_study(study)) == []
    for html in pages:
        assert not re.search(r"gold|practice|hidden reference|condition", html, flags=re.IGNORECASE)


# ---- numbering: practice apart; gold and test alike ----

def test_practice_trials_are_counted_apart_and_gold_is_counted_as_a_test_clip(db, clip_files):
    study, clips = method_study(clip_files, Study.METHOD_ACR, variants=(0, 1, 2, 3, 4))
    participant = participant_with_trials(study, [
        (clips[0], None, PRACTICE), (clips[1], None, PRACTICE), (clips[2], None, TEST), (clips[3], None, GOLD),
        (clips[4], None, TEST),
    ])
    headings = []
    for position in range(5):
        html = page_of(participant, position)
        count = re.search(r'<p class="trial__count">.*?</p>', html).group(0)
        progress = re.search(r'<progress class="progress" max="(\d+)" value="(\d+)"', html).groups()
        headings.append((re.sub(r"<[^>]+>", "", count).replace("Progress: ", ""), progress))
    assert headings == [
        ("Practice clip 1 of 2", ("2", "0")), ("Practice clip 2 of 2", ("2", "1")),
        ("Clip 1 of 3", ("3", "0")), ("Clip 2 of 3", ("3", "1")), ("Clip 3 of 3", ("3", "2")),
    ]


def test_a_gold_trial_page_is_the_page_of_a_test_trial(db, clip_files):
    study, clips = method_study(clip_files, Study.METHOD_ACR, variants=(0, 1))
    gold_first = participant_with_trials(study, [(clips[0], None, GOLD), (clips[1], None, TEST)])
    test_first = participant_with_trials(study, [(clips[1], None, TEST), (clips[0], None, GOLD)])
    for position in (0, 1):
        assert neutral(page_of(gold_first, position), gold_first) == neutral(page_of(test_first, position), test_first)


# ---- leaving ----

def _return_view(request, token):
    return HttpResponse("returned")


def _urlconf(with_return: bool) -> type:
    """The participant URLs, with or without the flow's "return" view, as the site's only URLs (a URLconf
    is anything with ``urlpatterns``; a class, because resolvers are cached by their URLconf)."""
    patterns = [p for p in participant_urls.urlpatterns if getattr(p, "name", None) != "return"]
    if with_return:
        patterns.append(path("p/<str:token>/return", _return_view, name="return"))
    return type("ParticipantURLs", (), {"urlpatterns": [path("", include((patterns, "participant")))]})


@pytest.mark.parametrize("with_return", [True, False])
def test_it_offers_to_return_the_study_only_where_the_flow_takes_it(db, clip_files, with_return):
    study, clips = method_study(clip_files, Study.METHOD_ACR, variants=(0,))
    participant = participant_with_trials(study, [(clips[0], None, TEST)])
    with override_settings(ROOT_URLCONF=_urlconf(with_return)):
        html = page_of(participant)
    form = re.search(r'<form method="post" action="([^"]+)"[^>]*id="return-form">(.*?)</form>', html, flags=re.S)
    if not with_return:
        assert form is None and "Return this study" not in html
        return
    assert form.group(1) == f"/p/{participant.token}/return"
    assert 'name="csrfmiddlewaretoken"' in form.group(2) and "Return this study</button>" in form.group(2)
    assert html.index('id="return-form"') > html.index('id="rating-form"')  # below the questions, out of the way


# ---- through the participant's URL ----

def test_the_participant_home_shows_the_trial_of_the_method(db, clip_files):
    study, clips = method_study(clip_files, Study.METHOD_DCR)
    participant = participant_with_trials(study, [(clips[0], None, TEST)])
    html = remembering_client(participant).get(f"/p/{participant.token}/").content.decode()
    assert [v["id"] for v in videos_of(html)] == ["reference", "clip"]
    assert "Clip <strong>1</strong> of 1" in html
