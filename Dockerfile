FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY cli cli
COPY nodes nodes
COPY plugin plugin
COPY schemas schemas
COPY ssh ssh
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home frpa
USER 10001
EXPOSE 8888
ENTRYPOINT ["frp-adapter"]
CMD ["serve"]
