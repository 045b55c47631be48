# syncmos image: one image for web and both worker kinds (the command differs per service).
# For GPU workers, build with a CUDA base and a CUDA torch wheel instead (see README "Deployment").
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg espeak-ng libespeak-ng1 curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY studyapp ./studyapp
COPY generation ./generation
COPY analysis ./analysis
COPY manage.py ./
# TORCH_INDEX selects the build: the CPU wheels by default, a CUDA index for worker-gpu images.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir -c constraints.txt --extra-index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir -c constraints.txt --no-deps lpips  # LPIPS heads only; --no-deps keeps torchvision out
RUN SECRET_KEY=build DATABASE_URL=sqlite:////tmp/build.sqlite3 python manage.py collectstatic --noinput

RUN useradd --create-home --uid 1000 syncmos && mkdir -p /data/media /data/weights && chown -R syncmos /data /app
USER syncmos
ENV SYNCMOS_MEDIA_ROOT=/data/media SYNCMOS_STATIC_ROOT=/app/var/static
EXPOSE 8000
CMD ["gunicorn", "studyapp.wsgi", "-b", "0.0.0.0:8000", "-w", "3", "--access-logfile", "-"]
