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

  ;; Pre-scan (stage 1 of src/kb/live-rows.ts): the dot product of each row with a query quantized to 7 bits and
  ;; offset into [1, 127] (q + 64). relaxed_dot_i8x16_i7x16_add_s is exact and the same on every platform when
  ;; its second operand lies in [0, 127], as here (pairwise sums stay within int16: 2 * 128 * 127 < 32768).
  ;; Subtracting bias = 64 * (sum of the row) gives the dot with the 7-bit query. dim % 32 == 0.
  (func $dot7_row (param $p i32) (param $dim i32) (param $q i32) (result i32)
    (local $end i32) (local $acc0 v128) (local $acc1 v128)
    (local.set $end (i32.add (local.get $p) (local.get $dim)))
    (loop $cols
      (local.set $acc0 (i32x4.relaxed_dot_i8x16_i7x16_add_s
        (v128.load (local.get $p)) (v128.load (local.get $q)) (local.get $acc0)))
      (local.set $acc1 (i32x4.relaxed_dot_i8x16_i7x16_add_s
        (v128.load offset=16 (local.get $p)) (v128.load offset=16 (local.get $q)) (local.get $acc1)))
      (local.set $p (i32.add (local.get $p) (i32.const 32)))
      (local.set $q (i32.add (local.get $q) (i32.const 32)))
      (br_if $cols (i32.lt_u (local.get $p) (local.get $end))))
    (local.set $acc0 (i32x4.add (local.get $acc0) (local.get $acc1)))
    (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $acc0)) (i32x4.extract_lane 1 (local.get $acc0)))
      (i32.add (i32x4.extract_lane 2 (local.get $acc0)) (i32x4.extract_lane 3 (local.get $acc0)))))

  ;; Rows first .. first + n - 1 whose pre-scan score (dot7 - bias[r]) * scale[r] exceeds $floor: their row
  ;; numbers to $rows_out and scores (f32) to $scores_out, in row order; returns how many.
  (func (export "prescan7") (param $first i32) (param $n i32) (param $dim i32) (param $q i32)
    (param $scales i32) (param $bias i32) (param $floor f32) (param $rows_out i32) (param $scores_out i32)
    (result i32)
    (local $r i32) (local $end i32) (local $count i32) (local $score f32)
    (local.set $r (local.get $first))
    (local.set $end (i32.add (local.get $first) (local.get $n)))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $r) (local.get $end)))
        (local.set $score
          (f32.mul
            (f32.convert_i32_s
              (i32.sub
                (call $dot7_row (i32.mul (local.get $r) (local.get $dim)) (local.get $dim) (local.get $q))
                (i32.load (i32.add (local.get $bias) (i32.shl (local.get $r) (i32.const 2))))))
            (f32.load (i32.add (local.get $scales) (i32.shl (local.get $r) (i32.const 2))))))
        (if (f32.gt (local.get $score) (local.get $floor))
          (then
            (i32.store (i32.add (local.get $rows_out) (i32.shl (local.get $count) (i32.const 2))) (local.get $r))
            (f32.store (i32.add (local.get $scores_out) (i32.shl (local.get $count) (i32.const 2))) (local.get $score))
            (local.set $count (i32.add (local.get $count) (i32.const 1)))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows)))
    (local.get $count))

  ;; bias[r] = 64 * (sum of row r's int8 components), for rows first .. first + n - 1 (the pre-scan's correction).
  (func (export "row_bias") (param $first i32) (param $n i32) (param $dim i32) (param $bias i32)
    (local $r i32) (local $end i32) (local $p i32) (local $row_end i32) (local $acc v128)
    (local.set $r (local.get $first))
    (local.set $end (i32.add (local.get $first) (local.get $n)))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $r) (local.get $end)))
        (local.set $p (i32.mul (local.get $r) (local.get $dim)))
        (local.set $row_end (i32.add (local.get $p) (local.get $dim)))
        (local.set $acc (v128.const i32x4 0 0 0 0))
        (loop $cols
          (local.set $acc (i32x4.add (local.get $acc)
            (i32x4.extadd_pairwise_i16x8_s (i16x8.extadd_pairwise_i8x16_s (v128.load (local.get $p))))))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (br_if $cols (i32.lt_u (local.get $p) (local.get $row_end))))
        (i32.store (i32.add (local.get $bias) (i32.shl (local.get $r) (i32.const 2)))
          (i32.shl
            (i32.add
              (i32.add (i32x4.extract_lane 0 (local.get $acc)) (i32x4.extract_lane 1 (local.get $acc)))
              (i32.add (i32x4.extract_lane 2 (local.get $acc)) (i32x4.extract_lane 3 (local.get $acc))))
            (i32.const 6)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
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
