#!/usr/bin/env bash
# Puts Prometheus' promtool at <stack>/bin/promtool (URS_STACK_DIR, default .stack), for the tests that run
# deploy/prometheus/alerts.yml and scrape.yml through it (deploy/test/promtool.test.ts). `npm run promtool:install`.
#
# Does nothing when a promtool 2.x is already on PATH or already extracted (the tests' expectations are Prometheus
# 2's: see deploy/test/promtool.test.ts). Otherwise it downloads Debian's
# `prometheus` package (apt-get download, into <stack>/cache; no install, so no Prometheus server is set up or
# started) and extracts only usr/bin/promtool from it. Needs Debian or Ubuntu (apt-get, dpkg-deb); elsewhere
# install a promtool 2.x from https://github.com/prometheus/prometheus/releases and put it on PATH or name it in
# PROMTOOL.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
stack_dir="${URS_STACK_DIR:-.stack}"
case "$stack_dir" in /*) ;; *) stack_dir="$(pwd)/$stack_dir" ;; esac
bin="$stack_dir/bin/promtool"
cache="$stack_dir/cache"

say() { printf 'promtool: %s\n' "$*" >&2; }

if [ -n "${PROMTOOL:-}" ]; then
  say "PROMTOOL names $PROMTOOL: nothing to install"
  exit 0
fi
if command -v promtool >/dev/null 2>&1; then
  case "$(promtool --version 2>&1 | head -n 1)" in
    *"version 2."*)
      say "$(command -v promtool) is on PATH: nothing to install"
      exit 0
      ;;
    *) say "$(command -v promtool) is not promtool 2.x: extracting Debian's" ;;
  esac
fi
if [ -x "$bin" ]; then
  say "$bin is there: nothing to install"
  exit 0
fi
for tool in apt-get apt-cache dpkg-deb; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "$tool not found: this script needs Debian or Ubuntu. Install a promtool 2.x from https://github.com/prometheus/prometheus/releases and put it on PATH or set PROMTOOL to it"
    exit 1
  fi
done

# No candidate means the package lists were never fetched (a fresh container) or are stale: fetch them once.
candidate() { apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: *//p'; }
if [ -z "$(candidate)" ] || [ "$(candidate)" = "(none)" ]; then
  if [ "$(id -u)" != 0 ]; then
    say "apt knows no 'prometheus' package: run 'sudo apt-get update', then this script again"
    exit 1
  fi
  say "apt knows no 'prometheus' package: running apt-get update"
  apt-get update -qq
  if [ -z "$(candidate)" ] || [ "$(candidate)" = "(none)" ]; then
    say "apt still knows no 'prometheus' package after apt-get update: enable the distribution's main component, or install a promtool 2.x by hand (https://github.com/prometheus/prometheus/releases) and set PROMTOOL"
    exit 1
  fi
fi

mkdir -p "$cache" "$(dirname "$bin")"
deb="$(find "$cache" -maxdepth 1 -name 'prometheus_*.deb' | sort | tail -n 1)"
if [ -z "$deb" ]; then
  say "downloading the prometheus $(candidate) package (~20 MB) into $cache"
  # apt-get download writes into the working directory. As root, apt notes that the download is unsandboxed
  # when the _apt user cannot write there: harmless.
  (cd "$cache" && apt-get download -q prometheus)
  deb="$(find "$cache" -maxdepth 1 -name 'prometheus_*.deb' | sort | tail -n 1)"
fi

# Only promtool, through a temporary directory, so that an interrupted run never leaves half a binary at $bin.
tmp="$(mktemp -d "$stack_dir/bin/.promtool.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/bin/promtool
mv "$tmp/usr/bin/promtool" "$bin"
say "$("$bin" --version 2>&1 | head -n 1) at $bin"
