# syntax=docker/dockerfile:1
# One image for the five pipeline stages and the Defender simulator; the command picks what runs:
#   docker run defender-urs node services/poller/dist/main.js
#   docker run defender-urs node test/simulator/dist/main.js --host 0.0.0.0
# Node 24, an LTS release supported until 2028-04 (Node 20 reached its end of life on 2026-04-30).
ARG NODE_IMAGE=node:24-bookworm-slim

# Stage 1: install every dependency, compile all TypeScript project references, drop dev dependencies.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY libs ./libs
COPY services ./services
COPY test/simulator ./test/simulator
# A workspace and a project reference of the root build: without it npm ci's `tsc -b` stops (TS5083).
COPY test/bench ./test/bench
# npm ci runs the root `prepare` script, which is `tsc -b` over every package.
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund \
 && find libs services test -name '*.tsbuildinfo' -delete

# Stage 2: the compiled packages and production dependencies only, run as the unprivileged node user.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# Owned by root: node reads and runs the code but cannot rewrite it (the stages write no files, as deploy/k8s's
# read-only root filesystem holds them to).
COPY --from=build /app /app
# The simulator writes its CA certificate to /sim and the CA's key to /sim-key (a volume of its own, which the
# stages do not mount); a named volume mounted on either starts with this owner and mode.
RUN mkdir -p /sim /sim-key && chown node:node /sim /sim-key && chmod 700 /sim-key
USER node
CMD ["node", "services/registrar/dist/main.js"]
