"""Participant-facing URLs. Every path segment is an opaque token: nothing names a clip or condition."""

from django.urls import path

from studyapp.views import media, participant

app_name = "participant"

urlpatterns = [
    path("s/<str:public_id>/", participant.study_entry, name="study-entry"),
    path("p/<str:token>/", participant.participant_home, name="home"),
    path("p/<str:token>/start", participant.begin, name="begin"),
    path("p/<str:token>/rate", participant.rate, name="rate"),
    path("p/<str:token>/events", participant.playback, name="events"),
    path("m/<str:signed>", media.clip_media, name="clip-media"),
]
