package flinkrec;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.api.java.tuple.Tuple4;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.python.KeyByKeySelector;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * The front of the recommendation job, on the JVM: raw JSON events -> per user shard, one batch per window.
 *
 * <p>A Python operator pays a fixed price per record that crosses into it (and per state access), so the
 * per-event work before the user state is done here: read the user id and the event time of each raw
 * record (leniently: the Python side validates every record fully and sends the invalid ones to the
 * dead-letter topic with the reason), assign Flink timestamps and bounded-out-of-orderness watermarks
 * from the ts field, key by user shard ({@code crc32(user_id) % shards}, as {@code udfs.shard.shard_of}),
 * and buffer each shard's raw records in Flink state until the end of its processing-time window
 * ({@code windowMs}); the Python user operator then receives one record per shard per window:
 * {@code Row(shard, Row(String[] payloads, long[] watermark at each record's arrival, String[] origins))} (payload
 * and origin as {@link SourceRows} defines them).
 *
 * <p>A record without a readable user id goes to the shard of its crc32; one without a readable ts in
 * {@code minTs..maxTs} carries no timestamp (Long.MIN_VALUE) and does not move the watermark. An event-time
 * timer at Long.MAX_VALUE flushes the last buffer when a bounded input ends (the final watermark).
 */
public final class EventFront {

    private EventFront() {}

    /** (shard, ts or Long.MIN_VALUE, payload, origin). */
    static final TypeInformation<Tuple4<Integer, Long, String, String>> KEYED =
            Types.TUPLE(Types.INT, Types.LONG, Types.STRING, Types.STRING);

    /** The Python operator's value type: Row(payloads, watermark at arrival of each, origins). */
    public static final TypeInformation<Row> BATCH =
            Types.ROW(BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO, PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO,
                    BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO);

    static final TypeInformation<Row> KEYED_BATCH = Types.ROW(Types.INT, BATCH);

    /**
     * Build the front on a stream of source rows ({@link SourceRows}); the result is keyed the way PyFlink's {@code key_by}
     * keys a stream (Row(key, value) with {@link KeyByKeySelector}), for a Python KeyedProcessFunction.
     *
     * @param parallelism the parallelism of the per-record part (chained to the source, which keeps each
     *     source partition's order); 0 for the job's default
     * @param eventBufferTimeoutMs the network buffer timeout of the per-record part's output, the one hop that
     *     carries every event (-1: only full buffers; below -1: the environment's)
     */
    public static KeyedStream<Row, Row> build(DataStream<Row> records, int shards, long maxOutOfOrdernessMs,
            long minTs, long maxTs, int maxBytes, long windowMs, int parallelism, long eventBufferTimeoutMs,
            boolean sourceWatermarks) {
        SingleOutputStreamOperator<Tuple4<Integer, Long, String, String>> keyed =
                records.map(new ShardEvents(shards, minTs, maxTs, maxBytes)).returns(KEYED).name("shard-events");
        SingleOutputStreamOperator<Tuple4<Integer, Long, String, String>> timed = keyed;
        if (!sourceWatermarks) {  // a stream without event time (a collection in tests): one watermark per subtask
            WatermarkStrategy<Tuple4<Integer, Long, String, String>> strategy = WatermarkStrategy
                    .<Tuple4<Integer, Long, String, String>>forBoundedOutOfOrderness(
                            Duration.ofMillis(maxOutOfOrdernessMs))
                    .withTimestampAssigner((event, previous) -> event.f1);
            timed = keyed.assignTimestampsAndWatermarks(strategy).name("event-time");
        }
        if (parallelism > 0) {
            keyed.setParallelism(parallelism);
            timed.setParallelism(parallelism);
        }
        if (eventBufferTimeoutMs >= -1) {
            timed.setBufferTimeout(eventBufferTimeoutMs);
        }
        SingleOutputStreamOperator<Row> batches = timed
                .keyBy(event -> event.f0, Types.INT)
                .process(new ShardBuffer(windowMs))
                .returns(KEYED_BATCH)
                .name("event-buffer")
                .uid("event-buffer");
        return batches.keyBy(new KeyByKeySelector(), Types.ROW(Types.INT));
    }

    /**
     * The watermarks of a Kafka source of events: event time from the records' {@code ts} (as {@link ShardEvents}
     * reads it), bounded out of orderness, generated per partition by the source, so that reading one partition
     * ahead of another never makes the other's events late. A partition without records for {@code idleMs}
     * (0: never) stops holding the watermark back until it has records again.
     */
    public static WatermarkStrategy<Row> sourceWatermarks(long maxOutOfOrdernessMs, long minTs, long maxTs,
            long idleMs) {
        WatermarkStrategy<Row> strategy = WatermarkStrategy
                .<Row>forBoundedOutOfOrderness(Duration.ofMillis(maxOutOfOrdernessMs))
                .withTimestampAssigner(new EventTimes(minTs, maxTs));
        return idleMs > 0 ? strategy.withIdleness(Duration.ofMillis(idleMs)) : strategy;
    }

    /** A source row's event time: its payload's {@code ts}, or Long.MIN_VALUE when there is none to take. */
    public static final class EventTimes implements SerializableTimestampAssigner<Row> {
        private static final long serialVersionUID = 1L;
        private final long minTs;
        private final long maxTs;
        private transient ObjectMapper mapper;

        public EventTimes(long minTs, long maxTs) {
            this.minTs = minTs;
            this.maxTs = maxTs;
        }

        @Override
        public long extractTimestamp(Row record, long previous) {
            if (mapper == null) {
                mapper = new ObjectMapper();
            }
            String raw = (String) record.getField(0);
            if (raw == null || raw.isEmpty() || raw.charAt(0) == SourceRows.BINARY) {
                return Long.MIN_VALUE;
            }
            try {
                JsonNode node = mapper.readTree(raw);
                return node != null && node.isObject() ? eventTime(node.get("ts"), minTs, maxTs) : Long.MIN_VALUE;
            } catch (Exception e) {
                return Long.MIN_VALUE;  // not JSON: the Python side rejects it with the reason
            }
        }
    }

    /** Source record -> (user shard, event time or Long.MIN_VALUE, payload, origin). */
    public static final class ShardEvents implements MapFunction<Row, Tuple4<Integer, Long, String, String>> {
        private static final long serialVersionUID = 1L;
        private final int shards;
        private final long minTs;
        private final long maxTs;
        private final int maxBytes;
        private transient ObjectMapper mapper;
        private transient CRC32 crc;

        public ShardEvents(int shards, long minTs, long maxTs, int maxBytes) {
            if (shards < 1) {
                throw new IllegalArgumentException("shards " + shards + " must be at least 1");
            }
            this.shards = shards;
            this.minTs = minTs;
            this.maxTs = maxTs;
            this.maxBytes = maxBytes;
        }

        @Override
        public Tuple4<Integer, Long, String, String> map(Row record) {
            if (mapper == null) {
                mapper = new ObjectMapper();
                crc = new CRC32();
            }
            String raw = (String) record.getField(0);
            String origin = (String) record.getField(1);
            String user = null;
            long ts = Long.MIN_VALUE;
            if (raw == null) {  // a tombstone: rejected in Python, shard of its origin
                return Tuple4.of(shardOf(origin), ts, raw, origin);
            }
            // characters <= bytes: longer ones are rejected by size in Python, as are Base64 (binary) payloads
            if (raw.length() <= maxBytes && (raw.isEmpty() || raw.charAt(0) != SourceRows.BINARY)) {
                try {
                    JsonNode node = mapper.readTree(raw);
                    if (node != null && node.isObject()) {
                        user = userId(node.get("user_id"));
                        ts = eventTime(node.get("ts"), minTs, maxTs);
                    }
                } catch (Exception e) {
                    // not JSON: the Python side rejects it with the reason
                }
            }
            return Tuple4.of(shardOf(user != null ? user : raw), ts, raw, origin);
        }

        /** The user id as the Python validator normalises it (a non-negative integer is its decimal string). */
        private static String userId(JsonNode node) {
            if (node == null) {
                return null;
            }
            if (node.isTextual()) {
                return node.textValue();
            }
            if (node.isIntegralNumber() && node.bigIntegerValue().signum() >= 0) {
                return node.bigIntegerValue().toString();
            }
            return null;
        }

        int shardOf(String key) {
            crc.reset();
            crc.update(key.getBytes(StandardCharsets.UTF_8));
            return (int) (crc.getValue() % shards);
        }
    }

    /** An event's time from its {@code ts} node: an integral number of ms within [minTs, maxTs], else MIN_VALUE. */
    static long eventTime(JsonNode node, long minTs, long maxTs) {
        if (node == null || !node.isNumber()) {
            return Long.MIN_VALUE;
        }
        double value = node.doubleValue();
        if (node.isIntegralNumber()) {
            if (!node.canConvertToLong()) {
                return Long.MIN_VALUE;
            }
            long ts = node.longValue();
            return ts >= minTs && ts <= maxTs ? ts : Long.MIN_VALUE;
        }
        if (Double.isFinite(value) && value == Math.rint(value) && value >= minTs && value <= maxTs) {
            return (long) value;
        }
        return Long.MIN_VALUE;
    }

    /**
     * Buffers a shard's records until the end of its processing-time window, then emits them as one batch; and
     * before the watermark passes a buffered record's event time, so that no record reaches the operators after a
     * watermark past its time (downstream state that waits for the watermark relies on it).
     */
    public static final class ShardBuffer
            extends KeyedProcessFunction<Integer, Tuple4<Integer, Long, String, String>, Row> {
        private static final long serialVersionUID = 1L;
        private final long windowMs;
        private transient ListState<Tuple3<String, Long, String>> buffer;
        /** The event-time timer set for the buffer: at most the time of every buffered record (none: unset). */
        private transient ValueState<Long> due;

        public ShardBuffer(long windowMs) {
            if (windowMs < 1) {
                throw new IllegalArgumentException("window " + windowMs + " ms must be at least 1");
            }
            this.windowMs = windowMs;
        }

        @Override
        public void open(OpenContext context) {
            buffer = getRuntimeContext().getListState(
                    new ListStateDescriptor<>("events", Types.TUPLE(Types.STRING, Types.LONG, Types.STRING)));
            due = getRuntimeContext().getState(new ValueStateDescriptor<>("due", Types.LONG));
        }

        @Override
        public void processElement(Tuple4<Integer, Long, String, String> event, Context ctx, Collector<Row> out)
                throws Exception {
            buffer.add(Tuple3.of(event.f2, ctx.timerService().currentWatermark(), event.f3));
            long now = ctx.timerService().currentProcessingTime();
            ctx.timerService().registerProcessingTimeTimer(now - now % windowMs + windowMs);
            ctx.timerService().registerEventTimeTimer(Long.MAX_VALUE);  // a set: once per shard
            if (event.f1 != Long.MIN_VALUE) {
                Long set = due.value();
                if (set == null || event.f1 < set) {
                    ctx.timerService().registerEventTimeTimer(event.f1);
                    due.update(event.f1);
                }
            }
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
            List<Tuple3<String, Long, String>> events = new ArrayList<>();
            Iterable<Tuple3<String, Long, String>> stored = buffer.get();
            if (stored != null) {
                for (Tuple3<String, Long, String> e : stored) {
                    events.add(e);
                }
            }
            if (events.isEmpty()) {
                return;
            }
            buffer.clear();
            Long set = due.value();
            if (set != null) {
                ctx.timerService().deleteEventTimeTimer(set);
                due.clear();
            }
            String[] raws = new String[events.size()];
            long[] marks = new long[events.size()];
            String[] origins = new String[events.size()];
            for (int i = 0; i < raws.length; i++) {
                raws[i] = events.get(i).f0;
                marks[i] = events.get(i).f1;
                origins[i] = events.get(i).f2;
            }
            out.collect(Row.of(ctx.getCurrentKey(), Row.of(raws, marks, origins)));
        }
    }
}
