# ConvViz: the Streamlit dashboard, CPU only, offline at run time.
#
#   docker build -t convviz .
#   docker run --rm -p 8501:8501 convviz
#
# Add keras.applications models (downloaded while building, about 100-550 MB each):
#   docker build --build-arg PREPARED_MODELS="efficientnet-lite0 small-convnet vgg16" -t convviz .
FROM python:3.11-slim-bookworm

ARG PREPARED_MODELS="efficientnet-lite0 small-convnet"

# MALLOC_ARENA_MAX: every Streamlit session runs in threads of its own, and
# glibc gives busy threads malloc arenas of their own, which keep freed memory
# (a photo, a heatmap) for later instead of returning it: two arenas keep a
# long-running server's memory closer to what it actually holds.
ENV PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVVIZ_CACHE_DIR=/home/convviz/.cache/convviz \
    KERAS_HOME=/home/convviz/.keras \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2

# The runtime user owns only its home folder (the caches); the code stays root's.
RUN groupadd --gid 10001 convviz \
    && useradd --no-log-init --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin convviz

WORKDIR /app

# Runtime requirements only: no compilers, no test tools.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Numeric, so that a runtime (Kubernetes' runAsNonRoot) can tell it is not root.
USER 10001:10001

# Loads each prepared model once: checks that EfficientNet-Lite0 and the small
# convnet load offline, and downloads any keras.applications weights asked for
# into the runtime user's KERAS_HOME, so the container needs no network.
RUN python -c "import sys; from convviz_core import load_model; [load_model(name) for name in sys.argv[1:]]" ${PREPARED_MODELS}

EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).read() != b'ok')"]

CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
