(module
  (memory (export "memory") 1)
  ;; One row: two accumulators, 32 bytes per step, 16-byte tail when dim % 32 == 16.
  (func $dot_row (param $p i32) (param $dim i32) (param $q i32) (result i32)
    (local $end i32) (local $acc0 v128) (local $acc1 v128) (local $a v128) (local $b v128)
    (local.set $end (i32.add (local.get $p) (i32.and (local.get $dim) (i32.const -32))))
    (block $done
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (loop $cols
        (local.set $a (v128.load (local.get $p)))
        (local.set $b (v128.load offset=16 (local.get $p)))
        (local.set $acc0 (i32x4.add (local.get $acc0)
          (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_s (local.get $a)) (v128.load (local.get $q)))))
        (local.set $acc1 (i32x4.add (local.get $acc1)
          (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_s (local.get $a)) (v128.load offset=16 (local.get $q)))))
        (local.set $acc0 (i32x4.add (local.get $acc0)
          (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_s (local.get $b)) (v128.load offset=32 (local.get $q)))))
        (local.set $acc1 (i32x4.add (local.get $acc1)
          (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_s (local.get $b)) (v128.load offset=48 (local.get $q)))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (local.set $q (i32.add (local.get $q) (i32.const 64)))
        (br_if $cols (i32.lt_u (local.get $p) (local.get $end)))))
    (if (i32.and (local.get $dim) (i32.const 16))
      (then
        (local.set $a (v128.load (local.get $p)))
        (local.set $acc0 (i32x4.add (local.get $acc0)
          (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_s (local.get $a)) (v128.load (local.get $q)))))
        (local.set $acc1 (i32x4.add (local.get $acc1)
          (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_s (local.get $a)) (v128.load offset=16 (local.get $q)))))))
    (local.set $acc0 (i32x4.add (local.get $acc0) (local.get $acc1)))
    (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $acc0)) (i32x4.extract_lane 1 (local.get $acc0)))
      (i32.add (i32x4.extract_lane 2 (local.get $acc0)) (i32x4.extract_lane 3 (local.get $acc0)))))

  (func (export "dot_all") (param $vecs i32) (param $n i32) (param $dim i32) (param $q i32) (param $out i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (i32.store (local.get $out) (call $dot_row (local.get $vecs) (local.get $dim) (local.get $q)))
        (local.set $vecs (i32.add (local.get $vecs) (local.get $dim)))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))
        (br $rows))))

  (func (export "dot_some") (param $vecs i32) (param $rows i32) (param $count i32) (param $dim i32) (param $q i32) (param $out i32)
    (local $k i32)
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $k) (local.get $count)))
        (i32.store
          (i32.add (local.get $out) (i32.shl (local.get $k) (i32.const 2)))
          (call $dot_row
            (i32.add (local.get $vecs)
              (i32.mul (i32.load (i32.add (local.get $rows) (i32.shl (local.get $k) (i32.const 2)))) (local.get $dim)))
            (local.get $dim) (local.get $q)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $each)))))
