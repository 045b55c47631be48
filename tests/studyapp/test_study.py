"""The Study model's own rules."""

import pytest
from django.core.exceptions import ValidationError

from studyapp.models import Study

pytestmark = pytest.mark.django_db


def test_it_accepts_an_acr_study():
    Study(title="Pilot", method=Study.METHOD_ACR).full_clean()


@pytest.mark.parametrize("method", [Study.METHOD_ACR_HR, Study.METHOD_DCR, Study.METHOD_PAIRWISE])
def test_it_accepts_every_method(method):
    Study(title="Pilot", method=method).full_clean()


def test_it_offers_the_four_methods():
    assert {key for key, _ in Study.METHOD_CHOICES} == {"acr", "acr_hr", "dcr", "pairwise"}


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_it_refuses_a_face_share_outside_zero_to_one(share):
    with pytest.raises(ValidationError) as refused:
        Study(title="Pilot", face_height_share=share).full_clean()
    assert "face_height_share" in refused.value.message_dict


def test_it_refuses_a_target_ci_that_is_not_positive():
    with pytest.raises(ValidationError) as refused:
        Study(title="Pilot", target_ci_half_width=0).full_clean()
    assert "target_ci_half_width" in refused.value.message_dict


def test_it_times_out_silent_participants_after_two_hours_by_default():
    assert Study(title="Pilot").session_timeout_minutes == 120
