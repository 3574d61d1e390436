{
  "variables": {
    "have_zstd%": "<!(sh native/has-zstd.sh)"
  },
  "targets": [
    {
      "target_name": "iohelper",
      "sources": [
        "native/addon.cc",
        "native/errno_error.cc",
        "native/args.cc",
        "native/retry.cc",
        "native/aligned_buffer.cc",
        "native/file_syscalls.cc",
        "native/stream_copy.cc",
        "native/crc32c.cc",
        "native/ram_copy.cc",
        "native/ram_map.cc",
        "native/copy_job.cc",
        "native/chunk_codec.cc",
        "native/prefetch.cc",
        "native/fd_passing.cc",
        "native/unit_hash.cc",
        "native/ram_reader.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lpthread"],
      "conditions": [
        ["have_zstd==1", {"defines": ["IOHELPER_ZSTD"], "libraries": ["-lzstd"]}]
      ]
    }
  ]
}
