package flinkrec;

/**
 * One source record after {@link EventCheck}: a valid event ({@code reason == null}: its normalised fields) or a
 * refused record ({@code reason}, {@code message}). A Flink POJO: the record between the front's two operators and
 * in the shard buffer's state.
 */
public final class FrontEvent {
    /** The user shard ({@link EventFront.ShardEvents}). */
    public int shard;
    /** The event time (epoch ms); for a refused record its {@code ts} read leniently, else Long.MIN_VALUE. */
    public long ts = Long.MIN_VALUE;
    public String eventId;
    /** The user id; for a refused record the one read leniently (its shard key), or null. */
    public String userId;
    public String itemId;
    /** The index of the type in {@code udfs.events.EVENT_TYPES}. */
    public byte type;
    /** The rating, or the value or weight of the type ({@code udfs.events.Event.weight}). */
    public double weight;
    /** The source record as {@link SourceRows} delivers it. */
    public String payload;
    public String origin;
    /** Why the record is refused (a reason code of {@code udfs.events}); null for a valid event. */
    public String reason;
    public String message;
    /** The watermark when the record reached the shard buffer. */
    public long watermark = Long.MIN_VALUE;

    public FrontEvent() {}

    static FrontEvent refused(String reason, String message) {
        FrontEvent e = new FrontEvent();
        e.reason = reason;
        e.message = message;
        return e;
    }
}
