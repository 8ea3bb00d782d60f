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
# OPENBLAS_NUM_THREADS: numpy's small SVDs (Eigen-CAM) stall for seconds when
# OpenBLAS threads compete with TensorFlow's for the same cores.
ENV PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    OPENBLAS_NUM_THREADS=1 \
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

# Computes the offline models' filter atlases into the runtime user's
# CONVVIZ_CACHE_DIR, so that no student waits for one: the book's method on
# every layer, the clear mode on the layers a lesson shows, the default
# layer's large patterns (python -m convviz_core.features.precompute --help).
# Estimated from measured CPU time (2026-12-06): 30-50 minutes more build on
# 2 cores, about 500 MB of atlases. The atlases' keys hold the CPU's
# precision (bf16 where it has AVX512-BF16): a container run on another kind
# of CPU computes its own. PRECOMPUTE_ATLASES=0 skips it.
ARG PRECOMPUTE_ATLASES=1
RUN if [ "${PRECOMPUTE_ATLASES}" = "1" ]; then python -m convviz_core.features.precompute; fi

EXPOSE 8501

# Ready means the app draws its default page, not only that the server listens
# (/_stcore/health says "ok" even when app.py raises): convviz_app/readiness.py
# asks Streamlit's script health check to run app.py once in a throwaway
# session. Each check costs one script run of the default page (measured on a
# warm server: 0.08 s of CPU, 0.15 s); the first one also loads the model.
HEALTHCHECK --interval=30s --timeout=70s --start-period=120s --retries=3 \
    CMD ["python", "-m", "convviz_app.readiness", "http://localhost:8501"]

CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
