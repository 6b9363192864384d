# The rating service image: `rating serve`, `rating worker` and `rating db upgrade` share it.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
# Bytecode compiled now: at run time /app belongs to root and the service user cannot write it,
# so every process would otherwise compile every module again at start.
ENV UV_COMPILE_BYTECODE=1
COPY pyproject.toml uv.lock README.md ./
COPY clients/python/pyproject.toml clients/python/README.md ./clients/python/
RUN uv sync --frozen --no-dev --no-install-workspace
COPY rating_service ./rating_service
COPY clients/python/rating_client ./clients/python/rating_client
RUN uv sync --frozen --no-dev
RUN .venv/bin/python -m compileall -q rating_service clients/python/rating_client

FROM python:3.11-slim
RUN useradd --system --uid 10001 rating
WORKDIR /app
COPY --from=build /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    RATING_LISTEN_ADDRESS=0.0.0.0:50051 \
    RATING_METRICS_ADDRESS=0.0.0.0:9464
USER rating
EXPOSE 50051 9464
ENTRYPOINT ["rating"]
CMD ["serve"]
