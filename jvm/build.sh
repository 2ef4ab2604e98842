#!/usr/bin/env bash
# Compile the job's JVM-side operators (jvm/src) against the Flink jars inside the venv's apache-flink wheel
# into var/jars/flinkrec/flinkrec-jvm.jar (a few KB; `make jars` runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=var/jars/flinkrec/flinkrec-jvm.jar
command -v javac >/dev/null || { echo "jvm/build.sh: javac not found: install a JDK 11+ (e.g. openjdk-17-jdk-headless)" >&2; exit 1; }
PYFLINK=$("$PY" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
CP=$(ls "$PYFLINK"/lib/flink-dist-*.jar "$PYFLINK"/opt/flink-python-*.jar var/jars/flink/flink-sql-connector-kafka-*.jar | paste -sd: -)
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
javac -Xlint:all -Werror --release 11 -cp "$CP" -d "$BUILD" $(find jvm/src -name '*.java' | sort)
mkdir -p "$(dirname "$OUT")"
jar --create --file "$OUT.tmp" -C "$BUILD" .
mv "$OUT.tmp" "$OUT"
echo "jvm/build.sh: built $OUT"
