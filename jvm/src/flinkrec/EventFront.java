package flinkrec;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.SimpleCounter;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.python.KeyByKeySelector;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The front of the recommendation job, on the JVM: raw JSON events -> per user shard, one columnar batch per window.
 *
 * <p>A Python operator pays a fixed price per record that crosses into it (and per state access) and per event it
 * decodes and checks, so the per-event work before the user state is done here: parse and validate each record
 * ({@link EventCheck}: exactly the rules of {@code udfs.events}, with their reason codes and messages), assign
 * Flink timestamps and bounded-out-of-orderness watermarks from the ts field ({@link SettlingWatermarks}; on a
 * Kafka source, per partition in the source: {@link #sourceWatermarks}), key by user shard
 * ({@code crc32(user_id) % shards}, as {@code udfs.shard.shard_of}), and buffer each shard's records in Flink
 * state until the end of its processing-time window ({@code windowMs}); the Python user operator then receives one
 * record per shard per window: {@code Row(shard, batch)}, the batch as {@link #BATCH} describes it
 * ({@code operators.front.FrontBatch} in Python).
 *
 * <p>A refused record goes to the shard of its user id when one can be read (a string, or a non-negative integer),
 * else to the shard of its payload's crc32 (of its origin for a null value); it carries the timestamp of its
 * {@code ts} when that is an integral number in {@code minTs..maxTs}, else none (Long.MIN_VALUE: it does not
 * move the watermark). An event-time timer at Long.MAX_VALUE flushes the last buffer when a bounded input ends
 * (the final watermark).
 */
public final class EventFront {

    private EventFront() {}

    private static final Logger LOG = LoggerFactory.getLogger(EventFront.class);

    static final TypeInformation<FrontEvent> EVENT = Types.POJO(FrontEvent.class);

    /**
     * The Python operator's value: one window of a shard as columns. Per valid event, in arrival order:
     * event_id, user_id, item_id, type (code: index into {@code udfs.events.EVENT_TYPES}), weight (the rating or
     * the type's weight, {@code Event.weight}), ts, key (CRC-32 of the event id's UTF-8, as
     * {@code core.v2.model.Batch.key}), the watermark when it reached the buffer, and the payload and origin of an
     * event behind that watermark (null for the others: only those may go to the dead-letter output, as
     * late events). Per refused record: payload, origin, reason, message.
     */
    public static final TypeInformation<Row> BATCH = Types.ROW_NAMED(
            new String[] {"event_id", "user_id", "item_id", "type", "weight", "ts", "key", "watermark",
                "late_payload", "late_origin", "reject_payload", "reject_origin", "reject_reason", "reject_message"},
            BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO, BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO,
            BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO,
            PrimitiveArrayTypeInfo.DOUBLE_PRIMITIVE_ARRAY_TYPE_INFO, PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO,
            PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO, PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO,
            BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO, BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO,
            BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO, BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO,
            BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO, BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO);

    static final TypeInformation<Row> KEYED_BATCH = Types.ROW(Types.INT, BATCH);

    /**
     * Build the front on a stream of source rows ({@link SourceRows}); the result is keyed the way PyFlink's {@code key_by}
     * keys a stream (Row(key, value) with {@link KeyByKeySelector}), for a Python KeyedProcessFunction.
     *
     * @param check the event schema and its limits
     * @param parallelism the parallelism of the per-record part (chained to the source, which keeps each
     *     source partition's order); 0 for the job's default
     * @param eventBufferTimeoutMs the network buffer timeout of the per-record part's output, the one hop that
     *     carries every event (-1: only full buffers; below -1: the environment's)
     * @param sourceWatermarks the records carry event time and watermarks from their source
     *     ({@link #sourceWatermarks}); otherwise they are assigned here, one watermark per subtask
     * @param settleMs without source watermarks: the quiet time after which the watermark reaches the largest
     *     event time seen ({@link SettlingWatermarks}; 0: never)
     */
    public static KeyedStream<Row, Row> build(DataStream<Row> records, int shards, long maxOutOfOrdernessMs,
            EventCheck check, long windowMs, int parallelism, long eventBufferTimeoutMs, boolean sourceWatermarks,
            long settleMs) {
        SingleOutputStreamOperator<FrontEvent> keyed = records
                .transform("shard-events", EVENT, new EndOfInputMap<>(new ShardEvents(shards, check, sourceWatermarks)));
        SingleOutputStreamOperator<FrontEvent> timed = keyed;
        if (!sourceWatermarks) {  // a stream without event time (a collection in tests): one watermark per subtask
            WatermarkStrategy<FrontEvent> strategy = SettlingWatermarks
                    .<FrontEvent>strategy(maxOutOfOrdernessMs, settleMs)
                    .withTimestampAssigner((event, previous) -> event.ts);
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
                .keyBy(event -> event.shard, Types.INT)
                .process(new ShardBuffer(windowMs))
                .returns(KEYED_BATCH)
                .name("event-buffer")
                .uid("event-buffer");
        return batches.keyBy(new KeyByKeySelector(), Types.ROW(Types.INT));
    }

    /**
     * The watermarks of a Kafka source of events: event time from the records' {@code ts} ({@link EventTimes}),
     * bounded out of orderness, generated per partition by the source, so that reading one partition ahead of
     * another never makes the other's events late. A partition without records with a ts for {@code settleMs}
     * (0: never) has its watermark moved up to the largest event time it has seen ({@link SettlingWatermarks}); one
     * without any record for {@code idleMs} (0: never) stops holding the watermark back until it has one.
     */
    public static WatermarkStrategy<Row> sourceWatermarks(long maxOutOfOrdernessMs, EventCheck check, long idleMs,
            long settleMs) {
        return SettlingWatermarks.<Row>strategy(maxOutOfOrdernessMs, settleMs, idleMs)
                .withTimestampAssigner(new EventTimes(check));
    }

    /**
     * A source row's event time: the ts of its check ({@link EventCheck#check}: a valid event's, a refused record's
     * lenient one, else Long.MIN_VALUE). The check is handed to the {@link ShardEvents} chained after the source
     * ({@link LastCheck}), which then does not check the record again.
     */
    public static final class EventTimes implements SerializableTimestampAssigner<Row> {
        private static final long serialVersionUID = 1L;
        private final EventCheck check;

        public EventTimes(EventCheck check) {
            this.check = check;
        }

        @Override
        public long extractTimestamp(Row record, long previous) {
            return LastCheck.check(check, (String) record.getField(0)).ts;
        }
    }

    /**
     * The last check made by a source's timestamp assigner on this thread, for the {@link ShardEvents} chained after
     * it: a chained operator gets the record on the same thread, right after the assigner, with the same payload
     * String (a copy of a Row keeps its String fields). The front takes the check when the payload is that String
     * and the rules are equal, else (not chained, or other rules) checks the record itself: a check is a function of
     * the payload and the rules, so what it takes is what it would compute. Taking clears the slot, so a
     * {@link FrontEvent} the front fills in is never handed out twice.
     */
    static final class LastCheck {
        private static final ThreadLocal<LastCheck> ON_THREAD = ThreadLocal.withInitial(LastCheck::new);
        private EventCheck rules;
        private String payload;
        private FrontEvent event;

        /** {@code rules.check(payload)}, kept for {@link #take}. */
        static FrontEvent check(EventCheck rules, String payload) {
            FrontEvent event = rules.check(payload);
            LastCheck last = ON_THREAD.get();
            last.rules = rules;
            last.payload = payload;
            last.event = event;
            return event;
        }

        /** The kept check if it is {@code rules.check(payload)}, else null; the slot is empty after. */
        static FrontEvent take(EventCheck rules, String payload) {
            LastCheck last = ON_THREAD.get();
            FrontEvent event = last.event;
            boolean same = event != null && last.payload == payload && rules.equals(last.rules);
            last.rules = null;
            last.payload = null;
            last.event = null;
            return same ? event : null;
        }
    }

    /**
     * Source record -> {@link FrontEvent}: checked, with its user shard, payload and origin.
     *
     * <p>With {@code checkedAtSource} (the source assigns event time with {@link #sourceWatermarks}), the check is
     * the one the source's timestamp assigner made ({@link LastCheck}); a record without one (this operator not
     * chained to the source, or a source with other watermarks) is checked here, a second time: counted in the
     * metric {@code front.rechecked} and logged once.
     */
    public static final class ShardEvents extends RichMapFunction<Row, FrontEvent> {
        private static final long serialVersionUID = 1L;
        private final int shards;
        private final EventCheck check;
        private final boolean checkedAtSource;
        private transient CRC32 crc;
        private transient Counter rechecked;

        public ShardEvents(int shards, EventCheck check, boolean checkedAtSource) {
            if (shards < 1) {
                throw new IllegalArgumentException("shards " + shards + " must be at least 1");
            }
            this.shards = shards;
            this.check = check;
            this.checkedAtSource = checkedAtSource;
        }

        @Override
        public void open(OpenContext context) {
            rechecked = getRuntimeContext().getMetricGroup().addGroup("front").counter("rechecked");
        }

        /** The records checked here although {@code checkedAtSource}. */
        public long rechecked() {
            return rechecked == null ? 0 : rechecked.getCount();
        }

        @Override
        public FrontEvent map(Row record) {
            if (crc == null) {
                crc = new CRC32();
            }
            String raw = (String) record.getField(0);
            String origin = (String) record.getField(1);
            FrontEvent event = checkedAtSource ? LastCheck.take(check, raw) : null;
            if (event == null) {
                event = check.check(raw);
                if (checkedAtSource) {
                    if (rechecked == null) {
                        rechecked = new SimpleCounter();
                    }
                    if (rechecked.getCount() == 0) {
                        LOG.warn("shard-events: a record without the check of the source's timestamp assigner (not "
                                + "chained to a source with EventFront.sourceWatermarks?): checked again; the metric "
                                + "front.rechecked counts such records");
                    }
                    rechecked.inc();
                }
            }
            event.payload = raw;
            event.origin = origin;
            String key = event.userId != null ? event.userId : raw != null ? raw : origin != null ? origin : "";
            crc.reset();
            crc.update(key.getBytes(StandardCharsets.UTF_8));
            event.shard = (int) (crc.getValue() % shards);
            return event;
        }
    }

    /**
     * Buffers a shard's records until the end of its processing-time window, then emits them as one batch; and
     * before the watermark passes a buffered record's event time, so that no record reaches the operators after a
     * watermark past its time (downstream state that waits for the watermark relies on it).
     */
    public static final class ShardBuffer extends KeyedProcessFunction<Integer, FrontEvent, Row> {
        private static final long serialVersionUID = 1L;
        private final long windowMs;
        private transient ListState<FrontEvent> buffer;
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
            buffer = getRuntimeContext().getListState(new ListStateDescriptor<>("front-events", EVENT));
            due = getRuntimeContext().getState(new ValueStateDescriptor<>("due", Types.LONG));
        }

        @Override
        public void processElement(FrontEvent event, Context ctx, Collector<Row> out) throws Exception {
            event.watermark = ctx.timerService().currentWatermark();
            if (event.reason == null && event.ts >= event.watermark) {
                event.payload = null;  // on time: its record is not needed (see BATCH)
                event.origin = null;
            }
            buffer.add(event);
            long now = ctx.timerService().currentProcessingTime();
            ctx.timerService().registerProcessingTimeTimer(now - now % windowMs + windowMs);
            ctx.timerService().registerEventTimeTimer(Long.MAX_VALUE);  // a set: once per shard
            if (event.ts != Long.MIN_VALUE) {
                Long set = due.value();
                if (set == null || event.ts < set) {
                    ctx.timerService().registerEventTimeTimer(event.ts);
                    due.update(event.ts);
                }
            }
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
            List<FrontEvent> valid = new ArrayList<>();
            List<FrontEvent> refused = new ArrayList<>();
            Iterable<FrontEvent> stored = buffer.get();
            if (stored != null) {
                for (FrontEvent e : stored) {
                    (e.reason == null ? valid : refused).add(e);
                }
            }
            if (valid.isEmpty() && refused.isEmpty()) {
                return;
            }
            buffer.clear();
            Long set = due.value();
            if (set != null) {
                ctx.timerService().deleteEventTimeTimer(set);
                due.clear();
            }
            out.collect(Row.of(ctx.getCurrentKey(), batch(valid, refused)));
        }

        private static Row batch(List<FrontEvent> valid, List<FrontEvent> refused) {
            int n = valid.size();
            String[] eventIds = new String[n];
            String[] users = new String[n];
            String[] items = new String[n];
            byte[] types = new byte[n];
            double[] weights = new double[n];
            long[] times = new long[n];
            long[] keys = new long[n];
            long[] marks = new long[n];
            String[] latePayloads = new String[n];
            String[] lateOrigins = new String[n];
            CRC32 crc = new CRC32();
            for (int i = 0; i < n; i++) {
                FrontEvent e = valid.get(i);
                eventIds[i] = e.eventId;
                users[i] = e.userId;
                items[i] = e.itemId;
                types[i] = e.type;
                weights[i] = e.weight;
                times[i] = e.ts;
                crc.reset();
                crc.update(e.eventId.getBytes(StandardCharsets.UTF_8));
                keys[i] = crc.getValue();
                marks[i] = e.watermark;
                latePayloads[i] = e.payload;
                lateOrigins[i] = e.origin;
            }
            int m = refused.size();
            String[] payloads = new String[m];
            String[] origins = new String[m];
            String[] reasons = new String[m];
            String[] messages = new String[m];
            for (int i = 0; i < m; i++) {
                FrontEvent e = refused.get(i);
                payloads[i] = e.payload;
                origins[i] = e.origin;
                reasons[i] = e.reason;
                messages[i] = e.message;
            }
            return Row.of(eventIds, users, items, types, weights, times, keys, marks, latePayloads, lateOrigins,
                    payloads, origins, reasons, messages);
        }
    }
}
