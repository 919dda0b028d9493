# One image for the web server, the worker and the migration job (see compose.yaml).
FROM python:3.13-slim

ENV PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    PATH=/opt/venv/bin:$PATH

RUN pip install --no-cache-dir "uv>=0.5,<1"

WORKDIR /app
COPY pyproject.toml uv.lock .python-version ./
RUN uv sync --locked --no-dev --no-install-project

COPY . .
# Static files are collected into the image and served by WhiteNoise: no CDN, no nginx.
# The production settings need these values; collectstatic touches no database and signs
# nothing, so the key is a throwaway (production refuses a fixed one: it would be public).
RUN DJANGO_ENV=production ALLOWED_HOSTS=localhost DATABASE_URL=postgres://unused@localhost/unused \
    SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    python manage.py collectstatic --noinput

RUN useradd --system --uid 1000 app
USER app
EXPOSE 8000
CMD ["uvicorn", "project.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--lifespan", "off"]
