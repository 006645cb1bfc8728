#!/bin/sh
# A local Redis Cluster from Debian's redis-server: 3 primaries and 3 replicas on
# 127.0.0.1, for development and the test suite (deploy/cluster/README.md is the
# production recipe).
#
#   deploy/cluster/local-cluster.sh start DIR [BASE_PORT]   nodes on BASE_PORT..BASE_PORT+5 (default 7001)
#   deploy/cluster/local-cluster.sh stop DIR
#   deploy/cluster/local-cluster.sh node DIR PORT          start one node again (after a crash: it
#                                                          rejoins with its identity and data)
#
# start prints the REDIS_CLUSTER value on its last line and returns once every
# node says cluster_state:ok. Each node keeps its data, log and pid in DIR/PORT;
# the cluster bus uses PORT+10000. AOF everysec as in production, and as in
# production a primary takes no write without a replica in sync
# (min-replicas-to-write 1; max lag 2 s, below the 2 s node timeout's failover).
#
# With REDIS_PASSWORD in the environment every node requires it (requirepass, and
# masterauth for its replica); give the same REDIS_PASSWORD to `node` and to the
# gateway (docs/operations.md, REDIS_PASSWORD).
set -eu

auth=""
if [ -n "${REDIS_PASSWORD:-}" ]; then
  auth=yes
  # redis-cli reads it from here, for every call below including --cluster create.
  REDISCLI_AUTH=$REDIS_PASSWORD
  export REDISCLI_AUTH
fi

usage() { echo "usage: $0 start DIR [BASE_PORT] | stop DIR | node DIR PORT" >&2; exit 2; }

start_node() { # DIR PORT
  mkdir -p "$1/$2"
  # The password goes in the node's own config file (mode 600), not on its command line, where ps shows it.
  if [ -n "$auth" ]; then
    printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD" > "$1/$2/auth.conf"
    chmod 600 "$1/$2/auth.conf"
  elif [ -s "$1/$2/auth.conf" ]; then
    # A node of a cluster made with a password, restarted without REDIS_PASSWORD: opening it to
    # anyone (and leaving it unable to sync with its primary) is never what was meant.
    echo "$0: $1/$2 was started with REDIS_PASSWORD: give the same one again" >&2
    exit 2
  else
    : > "$1/$2/auth.conf"
  fi
  redis-server "$1/$2/auth.conf" --port "$2" --bind 127.0.0.1 --dir "$1/$2" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --cluster-require-full-coverage yes \
    --min-replicas-to-write 1 --min-replicas-max-lag 2 \
    --appendonly yes --appendfsync everysec --save '' --lazyfree-lazy-expire yes --repl-diskless-sync-delay 0 \
    --daemonize yes --pidfile "$1/$2/redis.pid" --logfile "$1/$2/redis.log" \
    --loglevel warning
}
[ $# -ge 2 ] || usage
cmd=$1
dir=$2

case "$cmd" in
start)
  base=${3:-7001}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  nodes=""
  for i in 0 1 2 3 4 5; do
    port=$((base + i))
    start_node "$dir" "$port"
    echo "$port" >> "$dir/ports"
    nodes="$nodes 127.0.0.1:$port"
  done
  for port in $(cat "$dir/ports"); do
    tries=0
    until redis-cli -p "$port" ping >/dev/null 2>&1; do
      tries=$((tries + 1)); [ $tries -lt 100 ] || { echo "node $port did not start: $(cat "$dir/$port/redis.log")" >&2; exit 1; }
      sleep 0.05
    done
  done
  # shellcheck disable=SC2086
  redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || { cat "$dir/create.log" >&2; exit 1; }
  for port in $(cat "$dir/ports"); do
    tries=0
    until redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
      tries=$((tries + 1)); [ $tries -lt 200 ] || { echo "node $port: cluster not ok" >&2; exit 1; }
      sleep 0.05
    done
  done
  # ...and until the replicas have taken their places (create assigns them last) and
  # finished their first sync: a replica that never synced may not take over.
  tries=0
  until [ "$(redis-cli -p "$base" cluster nodes | grep -c ' slave ')" -eq 3 ]; do
    tries=$((tries + 1)); [ $tries -lt 200 ] || { echo "replicas did not attach" >&2; exit 1; }
    sleep 0.05
  done
  for port in $(cat "$dir/ports"); do
    tries=0
    while redis-cli -p "$port" info replication | grep -q '^role:slave' && ! redis-cli -p "$port" info replication | grep -q 'master_link_status:up'; do
      tries=$((tries + 1)); [ $tries -lt 400 ] || { echo "replica $port did not sync" >&2; exit 1; }
      sleep 0.05
    done
  done
  echo "REDIS_CLUSTER=$(echo $nodes | tr ' ' ',')"
  ;;
stop)
  [ -f "$dir/ports" ] || exit 0
  for port in $(cat "$dir/ports"); do
    pidfile="$dir/$port/redis.pid"
    # A node a fault test left stopped (SIGSTOP) would keep the TERM pending forever: wake it first.
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile" 2>/dev/null || true)
      [ -n "$pid" ] && { kill -CONT "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; } || true
    fi
  done
  for port in $(cat "$dir/ports"); do
    pidfile="$dir/$port/redis.pid"
    tries=0
    while [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null && [ $tries -lt 100 ]; do tries=$((tries + 1)); sleep 0.05; done
    # Still up after 5 s (an AOF fsync stuck behind a slow disk): a test cluster must not outlive its run.
    [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || true
  done
  rm -f "$dir/ports"
  ;;
node)
  [ $# -eq 3 ] || usage
  start_node "$(cd "$dir" && pwd)" "$3"
  ;;
*) usage ;;
esac
