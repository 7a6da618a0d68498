package dev.vigia.bench;

import java.util.HashMap;
import java.util.Map;

/** `--name value` arguments. */
final class Args {
  private Args() {}

  static Map<String, String> parse(String[] argv) {
    Map<String, String> m = new HashMap<>();
    for (int i = 0; i < argv.length; i++) {
      if (!argv[i].startsWith("--") || i + 1 == argv.length) {
        throw new IllegalArgumentException("expected --name value pairs, got " + argv[i]);
      }
      m.put(argv[i].substring(2), argv[++i]);
    }
    return m;
  }

  static String required(Map<String, String> args, String name) {
    String v = args.get(name);
    if (v == null) {
      throw new IllegalArgumentException("--" + name + " is required");
    }
    return v;
  }
}
