#!/usr/bin/env bash
# Brings up (or down) the real services the project runs against, on this machine:
#   Apache Kafka 4.x, single-node KRaft broker+controller  127.0.0.1:${KAFKA_PORT:-9092}
#   Redis (Debian's redis-server)                          127.0.0.1:${REDIS_PORT:-6379}
# Idempotent: "up" leaves running services alone, "down" ignores stopped ones.
# Pid files and logs live in var/ (git-ignored).
#
# usage: deploy/services.sh up|down|status|jars
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="$ROOT/var"
JARS="$VAR/jars"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
REDIS_PORT="${REDIS_PORT:-6379}"
KAFKA_DIR="$VAR/kafka"
REDIS_DIR="$VAR/redis"
KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx768m}"

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- jars from Maven Central -------------------------------------------------
fetch_jars() {
  local pom="$ROOT/deploy/maven/pom.xml" stamp="$JARS/.stamp"
  if [ -f "$stamp" ] && [ "$stamp" -nt "$pom" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven)"
  log "fetching Kafka broker and Flink Kafka connector jars from Maven Central into var/jars/"
  rm -rf "$JARS/kafka" "$JARS/flink"
  mkdir -p "$JARS"
  mvn -B -q -f "$pom" -P kafka dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$JARS/kafka" >"$VAR/mvn.log" 2>&1 || die "mvn failed to fetch Kafka jars, see $VAR/mvn.log"
  mvn -B -q -f "$pom" -P flink dependency:copy-dependencies \
      -DoutputDirectory="$JARS/flink" >>"$VAR/mvn.log" 2>&1 || die "mvn failed to fetch the Flink connector, see $VAR/mvn.log"
  touch "$stamp"
}

# --- Kafka -------------------------------------------------------------------
kafka_up() {
  local pidf="$KAFKA_DIR/kafka.pid" props="$KAFKA_DIR/server.properties"
  if pid_alive "$pidf" && port_open "$KAFKA_PORT"; then log "kafka already up on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  if port_open "$KAFKA_PORT"; then
    log "WARNING: something this script did not start listens on 127.0.0.1:$KAFKA_PORT; using it as the broker"
    log "         (stop it, or set KAFKA_PORT and FLINKREC_KAFKA__BOOTSTRAP, to use a broker of the project's own)"
    return 0
  fi
  command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install -y openjdk-17-jre-headless)"
  fetch_jars
  mkdir -p "$KAFKA_DIR/data"
  sed -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
      -e "s#@DATA_DIR@#$KAFKA_DIR/data#g" "$ROOT/deploy/kafka/server.properties.in" >"$props"
  local cp="$JARS/kafka/*"
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    log "formatting KRaft storage in var/kafka/data (cluster id $cluster_id)"
    java -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" -Dkafka.logs.dir="$KAFKA_DIR" \
      -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" >"$KAFKA_DIR/format.log" 2>&1 \
      || die "formatting Kafka storage failed, see $KAFKA_DIR/format.log"
  fi
  log "starting kafka on 127.0.0.1:$KAFKA_PORT (log: var/kafka/server.log)"
  # shellcheck disable=SC2086
  nohup java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" -Dkafka.logs.dir="$KAFKA_DIR" \
    -cp "$cp" kafka.Kafka "$props" >"$KAFKA_DIR/stdout.log" 2>&1 < /dev/null &
  echo $! >"$pidf"
  local i
  for i in $(seq 1 120); do
    if ! pid_alive "$pidf"; then
      die "kafka exited while starting; see $KAFKA_DIR/server.log and $KAFKA_DIR/stdout.log"
    fi
    if port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_DIR/server.log" 2>/dev/null; then
      log "kafka up on 127.0.0.1:$KAFKA_PORT after ${i}x0.5s"; return 0
    fi
    sleep 0.5
  done
  die "kafka did not answer on 127.0.0.1:$KAFKA_PORT within 60 s; see $KAFKA_DIR/server.log"
}

kafka_down() {
  local pidf="$KAFKA_DIR/kafka.pid"
  if pid_alive "$pidf"; then
    local pid; pid="$(cat "$pidf")"
    log "stopping kafka (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

# --- Redis -------------------------------------------------------------------
redis_up() {
  local pidf="$REDIS_DIR/redis.pid"
  if pid_alive "$pidf" && port_open "$REDIS_PORT"; then log "redis already up on 127.0.0.1:$REDIS_PORT"; return 0; fi
  if port_open "$REDIS_PORT"; then
    if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
      log "WARNING: a Redis this script did not start answers on 127.0.0.1:$REDIS_PORT; using it"
      return 0
    fi
    die "port $REDIS_PORT is taken by something that is not Redis (ss -ltnp | grep $REDIS_PORT)"
  fi
  if ! command -v redis-server >/dev/null; then
    log "installing Debian's redis-server (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >"$VAR/apt-redis.log" 2>&1 \
      || die "apt-get install redis-server failed, see $VAR/apt-redis.log"
  fi
  mkdir -p "$REDIS_DIR"
  log "starting redis on 127.0.0.1:$REDIS_PORT (log: var/redis/redis.log)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --pidfile "$pidf" \
    --logfile "$REDIS_DIR/redis.log" --dir "$REDIS_DIR" --save "" --appendonly no \
    || die "redis-server failed to start; see $REDIS_DIR/redis.log"
  for i in $(seq 1 50); do
    if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then log "redis up on 127.0.0.1:$REDIS_PORT"; return 0; fi
    sleep 0.2
  done
  die "redis did not answer PING on 127.0.0.1:$REDIS_PORT within 10 s; see $REDIS_DIR/redis.log"
}

redis_down() {
  local pidf="$REDIS_DIR/redis.pid"
  if pid_alive "$pidf"; then
    log "stopping redis (pid $(cat "$pidf"))"
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$pidf")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pidf" || break; sleep 0.2; done
  fi
  rm -f "$pidf"
}

status() {
  if port_open "$KAFKA_PORT"; then echo "kafka: up   127.0.0.1:$KAFKA_PORT"; else echo "kafka: down"; fi
  if port_open "$REDIS_PORT"; then echo "redis: up   127.0.0.1:$REDIS_PORT"; else echo "redis: down"; fi
}

mkdir -p "$VAR"
case "${1:-}" in
  up) redis_up; kafka_up ;;
  down) kafka_down; redis_down ;;
  restart-kafka) kafka_down; kafka_up ;;
  status) status ;;
  jars) fetch_jars ;;
  *) echo "usage: $0 up|down|restart-kafka|status|jars" >&2; exit 2 ;;
esac
