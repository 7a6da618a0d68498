package dev.vigia.bench;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.BufferedReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The measuring around the engines, for scripts/bench-flink.sh: topics, producing the simulated
 * stream, watching a Vigía processor consume it, and comparing and timing the outputs. Topics have
 * one partition (offsets below are of partition 0).
 *
 * <pre>
 * topics   --create a,b,c [--log-append-time b,c]      create, kept until deleted (LogAppendTime:
 *                                                        broker-stamped)
 * produce  --events FILE.ndjson --topic T [--live true]  key tenant, timestamp occurred_at;
 *                                                        live: each event at its occurred_at
 * end      --topic T                                     print the end offset
 * delete   --prefix P                                    delete every topic named P...
 * watch    --pid P --metrics URL --events N              Vigía's CPU and time from its first
 *                                                        record to its last output
 * compare  --left NAME=NOTIF@FROM-TO,SAMPLES@FROM-TO --right ...   agreement by key
 * lag      --side NAME=NOTIF@FROM-TO [--deadlines-from T] [--deadlines-until T]
 *                                                        append time - deadline of alerts
 * </pre>
 */
public final class Harness {
  private Harness() {}

  public static void main(String[] argv) throws Exception {
    if (argv.length == 0) {
      throw new IllegalArgumentException("usage: Harness topics|produce|end|watch|compare|lag ...");
    }
    Map<String, String> a =
        Args.parse(java.util.Arrays.copyOfRange(argv, 1, argv.length));
    String brokers = a.getOrDefault("brokers", "127.0.0.1:9092");
    switch (argv[0]) {
      case "topics" -> topics(brokers, a);
      case "produce" -> produce(brokers, a);
      case "end" -> System.out.println(end(brokers, Args.required(a, "topic")));
      case "delete" -> delete(brokers, Args.required(a, "prefix"));
      case "watch" -> watch(a);
      case "compare" -> compare(brokers, a);
      case "lag" -> lag(brokers, a);
      default -> throw new IllegalArgumentException("unknown subcommand " + argv[0]);
    }
  }

  static void topics(String brokers, Map<String, String> a) throws Exception {
    Set<String> appendTime = new HashSet<>(List.of(a.getOrDefault("log-append-time", "").split(",")));
    try (Admin admin = Admin.create(Map.of("bootstrap.servers", brokers))) {
      for (String name : Args.required(a, "create").split(",")) {
        NewTopic t = new NewTopic(name, 1, (short) 1);
        // Records carry their events' times, months old for the pre-filled stream: without this
        // the broker's time-based retention would delete them between two engines' runs.
        Map<String, String> configs = new HashMap<>(Map.of("retention.ms", "-1"));
        if (appendTime.contains(name)) {
          configs.put("message.timestamp.type", "LogAppendTime");
        }
        t.configs(configs);
        try {
          admin.createTopics(List.of(t)).all().get();
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof TopicExistsException)) {
            throw e;
          }
        }
      }
    }
  }

  static void delete(String brokers, String prefix) throws Exception {
    try (Admin admin = Admin.create(Map.of("bootstrap.servers", brokers))) {
      List<String> ours =
          admin.listTopics().names().get().stream().filter(t -> t.startsWith(prefix)).toList();
      admin.deleteTopics(ours).all().get();
      System.out.println("DELETED " + ours.size() + " topics");
    }
  }

  static void produce(String brokers, Map<String, String> a) throws Exception {
    Path file = Path.of(Args.required(a, "events"));
    String topic = Args.required(a, "topic");
    boolean live = Boolean.parseBoolean(a.getOrDefault("live", "false"));
    Properties p = new Properties();
    p.put("bootstrap.servers", brokers);
    p.put("acks", "all");
    p.put("linger.ms", live ? "0" : "20");
    p.put("batch.size", "262144");
    p.put("key.serializer", StringSerializer.class.getName());
    p.put("value.serializer", StringSerializer.class.getName());
    long n = 0;
    long behindMs = 0;
    try (KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        BufferedReader in = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
      for (String line = in.readLine(); line != null; line = in.readLine()) {
        JsonNode e = Main.JSON.readTree(line);
        long at = Instant.parse(e.path("occurred_at").asText()).toEpochMilli();
        if (live) {
          long wait = at - System.currentTimeMillis();
          if (wait > 0) {
            Thread.sleep(wait);
          } else {
            behindMs = Math.max(behindMs, -wait);
          }
        }
        String tenant = e.path("tenant_id").asText();
        var record = new ProducerRecord<>(topic, null, at, tenant, line);
        record.headers().add("event_type", e.path("type").asText().getBytes(StandardCharsets.UTF_8));
        record.headers().add("tenant_id", tenant.getBytes(StandardCharsets.UTF_8));
        producer.send(record, (md, err) -> {
          if (err != null) {
            System.err.println("produce failed: " + err);
            System.exit(1);
          }
        });
        n++;
      }
      producer.flush();
    }
    System.out.printf("PRODUCED events=%d topic=%s max_behind_ms=%d%n", n, topic, behindMs);
  }

  static long end(String brokers, String topic) {
    TopicPartition tp = new TopicPartition(topic, 0);
    for (int attempt = 1; ; attempt++) {
      try (KafkaConsumer<String, String> c = consumer(brokers)) {
        return c.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp);
      } catch (org.apache.kafka.common.errors.TimeoutException slowBroker) {
        // The broker is shared: under load it may answer late; try again a few times.
        if (attempt == 4) {
          throw slowBroker;
        }
      }
    }
  }

  /**
   * Polls a Vigía process: its CPU when its first record was counted, and when its outputs stopped
   * changing after all `events` records were (outputs then stable for `settle-ms`).
   */
  static void watch(Map<String, String> a) throws Exception {
    long pid = Long.parseLong(Args.required(a, "pid"));
    URI metrics = URI.create(Args.required(a, "metrics"));
    long events = Long.parseLong(Args.required(a, "events"));
    long settleMs = Long.parseLong(a.getOrDefault("settle-ms", "3000"));
    long timeoutMs = Long.parseLong(a.getOrDefault("timeout-ms", "1800000"));
    HttpClient http = HttpClient.newHttpClient();
    long firstCpu = -1, firstMs = -1;
    double lastOutputs = -1;
    long lastChangeCpu = -1, lastChangeMs = -1;
    long startMs = System.currentTimeMillis();
    while (true) {
      long cpu = Cpu.ticks(pid);
      long now = System.currentTimeMillis();
      if (cpu < 0) {
        throw new IllegalStateException("process " + pid + " is gone");
      }
      if (now - startMs > timeoutMs) {
        throw new IllegalStateException("timed out watching " + pid);
      }
      String text;
      try {
        text =
            http.send(HttpRequest.newBuilder(metrics).timeout(Duration.ofSeconds(2)).build(),
                    HttpResponse.BodyHandlers.ofString())
                .body();
      } catch (java.io.IOException notYet) {
        Thread.sleep(50);
        continue;
      }
      double records = sum(text, "vigia_processor_records_total");
      double outputs = sum(text, "vigia_processor_outputs_total");
      if (records > 0 && firstCpu < 0) {
        firstCpu = cpu;
        firstMs = now;
      }
      if (outputs != lastOutputs) {
        lastOutputs = outputs;
        lastChangeCpu = cpu;
        lastChangeMs = now;
      }
      if (records >= events && now - lastChangeMs >= settleMs) {
        System.out.printf(
            "VIGIA_RESULT first_record_cpu_ticks=%d end_cpu_ticks=%d first_record_ms=%d end_ms=%d"
                + " records=%.0f outputs=%.0f clk_tck=%d%n",
            firstCpu, lastChangeCpu, firstMs, lastChangeMs, records, outputs, Cpu.CLK_TCK);
        return;
      }
      Thread.sleep(50);
    }
  }

  /** The sum of a Prometheus counter's samples, over its labels. */
  static double sum(String text, String name) {
    double total = 0;
    for (String line : text.split("\n")) {
      if (line.startsWith(name + "{") || line.startsWith(name + " ")) {
        total += Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
      }
    }
    return total;
  }

  /** One engine's outputs: a topic range of notifications and one of samples. */
  record Side(String name, Range notifications, Range samples) {
    static Side parse(String spec) {
      String[] nameRest = spec.split("=", 2);
      String[] ranges = nameRest[1].split(",");
      return new Side(
          nameRest[0], Range.parse(ranges[0]), ranges.length > 1 ? Range.parse(ranges[1]) : null);
    }
  }

  record Range(String topic, long from, long to) {
    static Range parse(String s) {
      String[] t = s.split("@");
      String[] ft = t[1].split("-");
      return new Range(t[0], Long.parseLong(ft[0]), Long.parseLong(ft[1]));
    }
  }

  /** What one engine said, by key, net of Vigía's corrections (none expected in order). */
  static final class Said {
    final Map<String, String> alerts = new TreeMap<>();
    final Map<String, String> withdrawals = new TreeMap<>();
    final Map<String, String> samples = new TreeMap<>();
    /** (deadline, record append time - deadline) of each alert, ms. */
    final List<long[]> lagMs = new ArrayList<>();
    int corrections, duplicates;
  }

  static Said read(String brokers, Side side) {
    Said said = new Said();
    Map<String, String> alertKeyById = new HashMap<>();
    for (ConsumerRecord<String, String> r : records(brokers, side.notifications())) {
      JsonNode n = parse(r.value());
      if (!"unanswered_conversation".equals(n.path("type").asText())) {
        continue;
      }
      JsonNode d = n.path("data");
      String key =
          n.path("tenant_id").asText() + "/" + d.path("conversation_id").asText() + " deadline "
              + millis(d.path("deadline").asText());
      JsonNode audience = n.path("audience");
      String to = audience.has("user_id") ? "user " + audience.path("user_id").asText()
          : "role " + audience.path("role").asText();
      if (n.path("withdraws").isMissingNode() || n.path("withdraws").isNull()) {
        String value = "customer_event " + d.path("customer_event_id").asText() + " to " + to
            + " created " + millis(n.path("created_at").asText());
        if (said.alerts.put(key, value) != null) {
          said.duplicates++;
        }
        alertKeyById.put(n.path("id").asText(), key);
        long deadline = millis(d.path("deadline").asText());
        said.lagMs.add(new long[] {deadline, r.timestamp() - deadline});
      } else if ("corrected".equals(d.path("state").asText())) {
        said.corrections++;
        said.alerts.remove(alertKeyById.get(n.path("withdraws").asText()));
      } else {
        String value = "to " + to + " resolved_at " + millis(d.path("resolved_at").asText());
        said.withdrawals.put(key + " " + d.path("state").asText(), value);
      }
    }
    if (side.samples() != null) {
      Map<String, String> sampleKeyById = new HashMap<>();
      for (ConsumerRecord<String, String> r : records(brokers, side.samples())) {
        JsonNode s = parse(r.value());
        if (!s.path("retracts").isMissingNode() && !s.path("retracts").isNull()) {
          said.corrections++;
          said.samples.remove(sampleKeyById.get(s.path("retracts").asText()));
          continue;
        }
        String key = s.path("tenant_id").asText() + "/" + s.path("conversation_id").asText()
            + " reply " + s.path("reply_event_id").asText();
        String value = "customer_event " + s.path("customer_event_id").asText() + " seller "
            + s.path("seller_id").asText() + " seconds " + s.path("response_seconds").asDouble();
        if (said.samples.put(key, value) != null) {
          said.duplicates++;
        }
        sampleKeyById.put(s.path("id").asText(), key);
      }
    }
    return said;
  }

  static void compare(String brokers, Map<String, String> a) {
    Side left = Side.parse(Args.required(a, "left"));
    Side right = Side.parse(Args.required(a, "right"));
    int show = Integer.parseInt(a.getOrDefault("show", "20"));
    // Only what both had to decide: alerts whose deadline the stream's event time passed.
    long until = a.containsKey("deadlines-until") ? millis(a.get("deadlines-until")) : Long.MAX_VALUE;
    Said l = read(brokers, left);
    Said r = read(brokers, right);
    StringBuilder line = new StringBuilder("AGREE " + left.name() + " " + right.name());
    String[] kinds = {"alerts", "withdrawals", "samples"};
    List<Map<String, String>> ls = List.of(l.alerts, l.withdrawals, l.samples);
    List<Map<String, String>> rs = List.of(r.alerts, r.withdrawals, r.samples);
    for (int k = 0; k < kinds.length; k++) {
      Set<String> keys = new TreeSet<>(ls.get(k).keySet());
      keys.addAll(rs.get(k).keySet());
      int same = 0, onlyLeft = 0, onlyRight = 0, differ = 0, shown = 0;
      for (String key : keys) {
        if (k < 2 && deadlineOf(key) > until) {
          continue;
        }
        String lv = ls.get(k).get(key), rv = rs.get(k).get(key);
        String what;
        if (Objects.equals(lv, rv)) {
          same++;
          continue;
        } else if (rv == null) {
          onlyLeft++;
          what = "only " + left.name();
        } else if (lv == null) {
          onlyRight++;
          what = "only " + right.name();
        } else {
          differ++;
          what = "differ";
        }
        if (shown++ < show) {
          System.out.printf("MISMATCH %s %s %s: %s | %s%n", kinds[k], what, key, lv, rv);
        }
      }
      line.append(String.format(" %s_same=%d %s_only_%s=%d %s_only_%s=%d %s_differ=%d",
          kinds[k], same, kinds[k], left.name(), onlyLeft, kinds[k], right.name(), onlyRight,
          kinds[k], differ));
    }
    line.append(String.format(" corrections_%s=%d corrections_%s=%d duplicates_%s=%d duplicates_%s=%d",
        left.name(), l.corrections, right.name(), r.corrections, left.name(), l.duplicates,
        right.name(), r.duplicates));
    System.out.println(line);
  }

  static long deadlineOf(String key) {
    String[] words = key.split(" ");
    return Long.parseLong(words[2]);
  }

  static void lag(String brokers, Map<String, String> a) {
    Side side = Side.parse(Args.required(a, "side"));
    long from = a.containsKey("deadlines-from") ? millis(a.get("deadlines-from")) : Long.MIN_VALUE;
    long until = a.containsKey("deadlines-until") ? millis(a.get("deadlines-until")) : Long.MAX_VALUE;
    List<Long> lags = new ArrayList<>();
    for (long[] deadlineAndLag : read(brokers, side).lagMs) {
      if (deadlineAndLag[0] >= from && deadlineAndLag[0] <= until) {
        lags.add(deadlineAndLag[1]);
      }
    }
    Collections.sort(lags);
    System.out.printf("LAG %s p50_ms=%d p99_ms=%d max_ms=%d n=%d%n", side.name(),
        pct(lags, 0.50), pct(lags, 0.99), lags.isEmpty() ? -1 : lags.get(lags.size() - 1),
        lags.size());
  }

  static long pct(List<Long> sorted, double q) {
    if (sorted.isEmpty()) {
      return -1;
    }
    int i = (int) Math.ceil(q * sorted.size()) - 1;
    return sorted.get(Math.max(0, Math.min(sorted.size() - 1, i)));
  }

  static List<ConsumerRecord<String, String>> records(String brokers, Range range) {
    List<ConsumerRecord<String, String>> out = new ArrayList<>();
    if (range.to() <= range.from()) {
      return out;
    }
    try (KafkaConsumer<String, String> c = consumer(brokers)) {
      TopicPartition tp = new TopicPartition(range.topic(), 0);
      c.assign(List.of(tp));
      c.seek(tp, range.from());
      long idle = 0;
      while (c.position(tp) < range.to()) {
        var batch = c.poll(Duration.ofMillis(500));
        idle = batch.isEmpty() ? idle + 1 : 0;
        if (idle > 60) {
          throw new IllegalStateException("no records from " + range + " for 30 s");
        }
        for (ConsumerRecord<String, String> r : batch) {
          if (r.offset() < range.to()) {
            out.add(r);
          }
        }
      }
    }
    return out;
  }

  static KafkaConsumer<String, String> consumer(String brokers) {
    Properties p = new Properties();
    p.put("bootstrap.servers", brokers);
    p.put("enable.auto.commit", "false");
    p.put("isolation.level", "read_uncommitted");
    p.put("max.poll.records", "5000");
    p.put("key.deserializer", StringDeserializer.class.getName());
    p.put("value.deserializer", StringDeserializer.class.getName());
    return new KafkaConsumer<>(p);
  }

  static JsonNode parse(String json) {
    try {
      return Main.JSON.readTree(json);
    } catch (Exception e) {
      throw new IllegalArgumentException("not JSON: " + json, e);
    }
  }

  static long millis(String rfc3339) {
    return Instant.parse(rfc3339).toEpochMilli();
  }
}
