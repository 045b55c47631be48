"""The Study model's own rules."""

import pytest
from django.core.exceptions import ValidationError

from studyapp.models import Study

pytestmark = pytest.mark.django_db


def test_it_accepts_an_acr_study():
    Study(title="Pilot", method=Study.METHOD_ACR).full_clean()


@pytest.mark.parametrize("method", [Study.METHOD_ACR_HR, Study.METHOD_DCR, Study.METHOD_PAIRWISE])
def test_it_refuses_a_method_that_is_not_implemented_yet(method):
    study = Study(title="Pilot", method=method)
    with pytest.raises(ValidationError) as refused:
        study.full_clean()
    message = refused.value.message_dict["method"][0]
    assert message.startswith(study.get_method_display())
    assert message.endswith("is not available yet; only ACR is implemented.")


def test_it_keeps_every_method_on_offer_for_later():
    assert {key for key, _ in Study.METHOD_CHOICES} == {"acr", "acr_hr", "dcr", "pairwise"}


def test_it_times_out_silent_participants_after_two_hours_by_default():
    assert Study(title="Pilot").session_timeout_minutes == 120
