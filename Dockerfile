# The web console, built from the npm registry's packages (web/package-lock.json).
FROM node:20-slim AS console
WORKDIR /src
COPY web web
RUN npm --prefix web ci --no-audit --no-fund && npm --prefix web run build

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY api api
COPY cli cli
COPY nodes nodes
COPY plugin plugin
COPY runtime runtime
COPY schemas schemas
COPY ssh ssh
COPY --from=console /src/api/ui api/ui
# The default store lives where the adapter's user may write it (a volume keeps it).
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home frpa \
    && mkdir -p /var/lib/frp-adapter && chown 10001 /var/lib/frp-adapter
ENV FRPA_STORE=sqlite:////var/lib/frp-adapter/frpa.db
VOLUME /var/lib/frp-adapter
USER 10001
EXPOSE 8888
ENTRYPOINT ["frp-adapter"]
CMD ["serve"]
