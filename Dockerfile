# GenScope service image: API (`genscope serve --no-worker` style uvicorn) and workers
# (`genscope worker`). Tokens are on by default (GENSCOPE_AUTH=tokens): the API listens on
# every interface of the container, and `genscope serve` refuses that with auth off. Create a
# user with `docker compose exec api genscope users create NAME`. CPU torch by default; build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
# for the GPU worker image.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GENSCOPE_DATA_DIR=/data \
    GENSCOPE_AUTH=tokens

# bubblewrap: every process that reads an uploaded file runs inside it (docs/sandbox.md); it
# needs user namespaces, which docker-compose.yml allows for the api and worker services
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 genscope && mkdir -p /data && chown genscope /data
WORKDIR /app

# torch first, from the chosen index, so that the project's install does not replace it
RUN pip install --index-url "${TORCH_INDEX}" "torch>=2.4,<2.15"

COPY pyproject.toml README.md* ./
COPY genscope ./genscope
COPY backend ./backend
COPY worker ./worker
COPY frontend ./frontend
# the engine with both extras: the API (`server`) and the workers (`worker`) run this image
RUN pip install ".[server,worker]"

USER genscope
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status == 200 else 1)"
CMD ["genscope", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
