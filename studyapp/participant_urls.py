"""Participant-facing URLs. Every path segment is an opaque token: nothing names a clip or condition."""

from django.urls import path

from studyapp.views import check, media, participant

app_name = "participant"

urlpatterns = [
    path("s/<str:public_id>/", participant.study_entry, name="study-entry"),
    path("p/<str:token>/", participant.participant_home, name="home"),
    path("p/<str:token>/start", participant.begin, name="begin"),
    path("p/<str:token>/rate", participant.rate, name="rate"),
    path("p/<str:token>/events", participant.playback, name="events"),
    path("p/<str:token>/check", participant.environment_check, name="check"),
    path("p/<str:token>/feedback", participant.feedback_seen, name="feedback"),
    path("p/<str:token>/return", participant.return_study, name="return"),
    path("m/<str:signed>", media.clip_media, name="clip-media"),
    path("c/<str:signed>", check.check_media, name="check-media"),
]
